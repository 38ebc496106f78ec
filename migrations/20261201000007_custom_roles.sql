-- Custom roles (`POST /api/v1/roles`): a change to any role is announced
-- on `registrar_roles`; every instance reloads what roles grant
-- (`auth::principal::RolePermissions::follow`).
CREATE FUNCTION registrar_notify_roles() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('registrar_roles', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER roles_notify AFTER INSERT OR UPDATE OR DELETE ON roles
    FOR EACH STATEMENT EXECUTE FUNCTION registrar_notify_roles();

COMMENT ON TABLE roles IS 'Built-in roles (Administrator, UserManager, Non-Expiring, the data tracker''s) and custom ones';
