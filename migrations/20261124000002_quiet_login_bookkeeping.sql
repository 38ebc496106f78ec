-- Login bookkeeping (attempt counter, last attempt, last success) changes on
-- every login attempt but nothing about anyone's access: stop announcing it,
-- as "last seen"/"last used" never were. Everything else about a user row is
-- still announced, including a lock (`locked_until`) and an upgraded hash.
-- Columns added later are announced too: the test compares whole rows minus
-- the bookkeeping. Cached answers (e.g. GET /users/me) may show bookkeeping
-- up to `auth.cache_max_age_secs` old.

DROP TRIGGER users_auth_notify ON users;

CREATE TRIGGER users_auth_notify_update AFTER UPDATE ON users
    FOR EACH ROW
    WHEN ((to_jsonb(OLD) - ARRAY['failed_login_attempts', 'last_login_attempt', 'last_successful_login'])
          IS DISTINCT FROM
          (to_jsonb(NEW) - ARRAY['failed_login_attempts', 'last_login_attempt', 'last_successful_login']))
    EXECUTE FUNCTION registrar_notify_auth();

CREATE TRIGGER users_auth_notify_delete AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION registrar_notify_auth();
