-- MFA policy: a session that may only enrol a second factor (the account
-- holds a role of `mfa.required_for_roles` and has none yet), and the auth
-- cache follows a session's second-factor state (step-up, enrolment).

ALTER TABLE sessions ADD COLUMN mfa_enrollment_only boolean NOT NULL DEFAULT false;

DROP TRIGGER sessions_auth_notify_update ON sessions;
CREATE TRIGGER sessions_auth_notify_update AFTER UPDATE ON sessions
    FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
          OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
          OR OLD.cookie_hash IS DISTINCT FROM NEW.cookie_hash
          OR OLD.user_id IS DISTINCT FROM NEW.user_id
          OR OLD.mfa_at IS DISTINCT FROM NEW.mfa_at
          OR OLD.mfa_enrollment_only IS DISTINCT FROM NEW.mfa_enrollment_only)
    EXECUTE FUNCTION registrar_notify_auth();
