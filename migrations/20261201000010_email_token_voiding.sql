-- A mailed link is for the account as it was when the link was sent: any
-- later change of its password, address, enabled state or roles voids the
-- unused links (whichever front end or statement made the change). Without
-- this, a link a user manager had sent (to an address they chose) would
-- still set the password after an administrator made the account an
-- administrator, and a reset link would outlive the password change it
-- was meant to replace.
CREATE FUNCTION email_tokens_void_user() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM email_tokens WHERE user_id = NEW.id AND used_at IS NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER users_void_email_tokens AFTER UPDATE ON users FOR EACH ROW
    WHEN (OLD.password_hash IS DISTINCT FROM NEW.password_hash
          OR OLD.email_key IS DISTINCT FROM NEW.email_key
          OR OLD.enabled IS DISTINCT FROM NEW.enabled)
    EXECUTE FUNCTION email_tokens_void_user();

CREATE FUNCTION email_tokens_void_role() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM email_tokens WHERE user_id = NEW.user_id AND used_at IS NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER user_roles_void_email_tokens AFTER INSERT ON user_roles FOR EACH ROW
    EXECUTE FUNCTION email_tokens_void_role();
