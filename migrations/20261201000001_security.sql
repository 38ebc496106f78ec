-- Failed logins for names that match no account, counted exactly as an
-- account's own (`users.failed_login_attempts`, `users.locked_until`), so
-- an unknown name answers like a known one: 401 until the limit, then 429
-- with Retry-After until the lockout ends. Keyed by the name as given,
-- folded. Rows whose lockout or window has passed are deleted as new
-- failures arrive.
CREATE TABLE unknown_login_attempts (
    login         text PRIMARY KEY,
    failed        integer NOT NULL,
    locked_until  timestamptz,
    last_attempt  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX unknown_login_attempts_last ON unknown_login_attempts (last_attempt);

-- One canonical key per email address, computed by the server
-- (`domain::Email::key`: Unicode lower-case local part, IDNA domain), so no
-- comparison depends on PostgreSQL's lower(), which folds U+212A KELVIN
-- SIGN to 'k' and 'İ' to 'i'. Existing rows get lower(email), which equals
-- the server's key for the addresses it accepted before (ASCII).
ALTER TABLE users ADD COLUMN email_key text;
UPDATE users SET email_key = lower(email);
ALTER TABLE users ALTER COLUMN email_key SET NOT NULL;
DROP INDEX users_email_key;
CREATE UNIQUE INDEX users_email_key ON users (email_key);

ALTER TABLE access_requests ADD COLUMN email_key text;
UPDATE access_requests SET email_key = lower(email) WHERE email IS NOT NULL;
DROP INDEX access_requests_open_email;
CREATE UNIQUE INDEX access_requests_open_email ON access_requests (project_id, email_key)
    WHERE status = 'pending' AND user_id IS NULL;
DROP INDEX access_requests_waiting_email;
CREATE INDEX access_requests_waiting_email ON access_requests (email_key)
    WHERE status = 'pending' AND user_id IS NULL;

-- Invitations expire, and any request can be withdrawn (by whoever made it,
-- a project owner or a user manager).
ALTER TABLE access_requests ADD COLUMN expires_at timestamptz;
ALTER TABLE access_requests DROP CONSTRAINT access_requests_status_check;
ALTER TABLE access_requests ADD CONSTRAINT access_requests_status_check
    CHECK (status IN ('pending', 'accepted', 'declined', 'withdrawn', 'expired'));
