-- Password checks in flight are counted apart from failures. A check
-- reserves a try before its hash is computed (so N parallel guesses never get
-- more than `auth.max_failed_logins` verifications); until now the
-- reservation *was* the failure count, so a check that ended without a
-- verdict (a client that hung up, a login whose password changed meanwhile,
-- a full hash queue) left a failure that nothing cleared, and five of them
-- refused every later login of the account. Now `failed_login_attempts`
-- counts verdicts only, and reservations older than a few seconds lapse.
ALTER TABLE users
    ADD COLUMN logins_in_flight integer NOT NULL DEFAULT 0,
    ADD COLUMN logins_in_flight_since timestamptz;

-- Counts of unlocked accounts may hold such abandoned reservations: start
-- them afresh (a locked account keeps its lock and count).
UPDATE users SET failed_login_attempts = 0 WHERE locked_until IS NULL AND failed_login_attempts > 0;

-- The checks in flight are login bookkeeping too: not announced to the auth
-- caches (see 20261124000002_quiet_login_bookkeeping.sql).
DROP TRIGGER users_auth_notify_update ON users;

CREATE TRIGGER users_auth_notify_update AFTER UPDATE ON users
    FOR EACH ROW
    WHEN ((to_jsonb(OLD) - ARRAY['failed_login_attempts', 'last_login_attempt', 'last_successful_login',
                                 'logins_in_flight', 'logins_in_flight_since'])
          IS DISTINCT FROM
          (to_jsonb(NEW) - ARRAY['failed_login_attempts', 'last_login_attempt', 'last_successful_login',
                                 'logins_in_flight', 'logins_in_flight_since']))
    EXECUTE FUNCTION registrar_notify_auth();
