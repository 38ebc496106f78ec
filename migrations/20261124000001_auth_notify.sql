-- Every change that can end or alter a caller's access announces the user's
-- id on the `registrar_auth` channel, after commit. Each instance keeps an
-- in-process cache of authenticated callers and drops a user's entries when
-- the id arrives (see src/auth/cache.rs). Postgres folds identical payloads
-- of one transaction into one notification.
-- "Last seen"/"last used" bookkeeping is left out: it changes nothing about access.

CREATE FUNCTION registrar_notify_auth() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        PERFORM pg_notify('registrar_auth', COALESCE(NEW.id, OLD.id)::text);
    ELSE
        PERFORM pg_notify('registrar_auth', COALESCE(NEW.user_id, OLD.user_id)::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_auth_notify AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION registrar_notify_auth();

CREATE TRIGGER user_roles_auth_notify AFTER INSERT OR UPDATE OR DELETE ON user_roles
    FOR EACH ROW EXECUTE FUNCTION registrar_notify_auth();

CREATE TRIGGER sessions_auth_notify_update AFTER UPDATE ON sessions
    FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
          OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
          OR OLD.cookie_hash IS DISTINCT FROM NEW.cookie_hash
          OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION registrar_notify_auth();
CREATE TRIGGER sessions_auth_notify_delete AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION registrar_notify_auth();

CREATE TRIGGER api_keys_auth_notify_update AFTER UPDATE ON api_keys
    FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
          OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
          OR OLD.secret_hash IS DISTINCT FROM NEW.secret_hash
          OR OLD.prefix IS DISTINCT FROM NEW.prefix
          OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION registrar_notify_auth();
CREATE TRIGGER api_keys_auth_notify_delete AFTER DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION registrar_notify_auth();
