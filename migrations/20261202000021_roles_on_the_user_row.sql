-- A user's roles, kept on the user's row by the database itself, in order:
-- every read of a user (a profile, each row of a list page, SCIM, XNAT)
-- read them with a sub-select and a sort per user, which was two fifths of
-- PostgreSQL's time for a page of 50 users. `user_roles` stays the truth
-- (its keys, its foreign keys and its other triggers are unchanged); this
-- column follows it in the same transaction, whichever statement changes
-- it (a grant, a revocation, a role's deletion cascading, an import).
ALTER TABLE users ADD COLUMN roles text[] NOT NULL DEFAULT '{}';

UPDATE users u SET roles = ARRAY(SELECT role FROM user_roles r WHERE r.user_id = u.id ORDER BY role)
WHERE EXISTS (SELECT 1 FROM user_roles r WHERE r.user_id = u.id);

-- The user's row is locked first, then read again by a statement of its
-- own: in READ COMMITTED each statement of a function sees what was
-- committed when it began, so the read comes after any other transaction
-- that changed the same user's roles has committed (it held the lock until
-- then). Reading in the UPDATE that waited for the lock would use the
-- snapshot from before the wait, and lose the other transaction's change.
CREATE FUNCTION users_keep_roles() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    who uuid;
BEGIN
    FOR who IN
        SELECT DISTINCT u FROM unnest(CASE TG_OP
            WHEN 'INSERT' THEN ARRAY[NEW.user_id]
            WHEN 'DELETE' THEN ARRAY[OLD.user_id]
            ELSE ARRAY[OLD.user_id, NEW.user_id] END) AS u
    LOOP
        PERFORM 1 FROM users WHERE id = who FOR NO KEY UPDATE;
        UPDATE users SET roles = ARRAY(SELECT role FROM user_roles WHERE user_id = who ORDER BY role)
        WHERE id = who
          AND roles IS DISTINCT FROM ARRAY(SELECT role FROM user_roles WHERE user_id = who ORDER BY role);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER user_roles_keep_roles AFTER INSERT OR UPDATE OR DELETE ON user_roles
    FOR EACH ROW EXECUTE FUNCTION users_keep_roles();
