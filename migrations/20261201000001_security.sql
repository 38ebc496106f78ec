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
