-- Second-factor failures have a counter of their own: a right password
-- (a login's first step, a `current_password` check) clears the password
-- failures, never these. Either counter reaching `auth.max_failed_logins`
-- locks the account; only a second factor that passes, an expired lock or
-- an administrator's unlock clears this one.
ALTER TABLE users ADD COLUMN mfa_failed_attempts integer NOT NULL DEFAULT 0;
