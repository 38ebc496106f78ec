-- The OpenID Provider's reads (userinfo, introspection, client
-- authentication) are served from the in-process auth cache like the
-- principals of the native API. Everything a cached grant's answer depends
-- on announces itself on `registrar_auth` (see src/auth/cache.rs):
--   * users, user_roles, sessions: already (20261124000001_auth_notify);
--   * memberships (the `groups` and `projects` claims): user_groups rows,
--     and a group's project or level, for each member;
--   * the grant itself: revoked or deleted (a client's grant is cached
--     under the grant's own id);
--   * a deleted client: the payload `clients` (not a user id) empties the
--     cache.
-- Clients also choose the algorithm of their tokens: RS256 (the default
-- OpenID Connect assumes) or ES256.

CREATE TRIGGER user_groups_auth_notify AFTER INSERT OR UPDATE OR DELETE ON user_groups
    FOR EACH ROW EXECUTE FUNCTION registrar_notify_auth();

CREATE FUNCTION registrar_notify_group_members() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('registrar_auth', ug.user_id::text) FROM user_groups ug WHERE ug.group_name = NEW.name;
    RETURN NULL;
END;
$$;
CREATE TRIGGER groups_auth_notify AFTER UPDATE ON groups
    FOR EACH ROW
    WHEN (OLD.level IS DISTINCT FROM NEW.level OR OLD.project_id IS DISTINCT FROM NEW.project_id)
    EXECUTE FUNCTION registrar_notify_group_members();

CREATE FUNCTION registrar_notify_grant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('registrar_auth', COALESCE(OLD.user_id, OLD.id)::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER oauth_grants_auth_notify_update AFTER UPDATE ON oauth_grants
    FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
          OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
          OR OLD.scopes IS DISTINCT FROM NEW.scopes)
    EXECUTE FUNCTION registrar_notify_grant();
CREATE TRIGGER oauth_grants_auth_notify_delete AFTER DELETE ON oauth_grants
    FOR EACH ROW EXECUTE FUNCTION registrar_notify_grant();

CREATE FUNCTION registrar_notify_clients() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('registrar_auth', 'clients');
    RETURN NULL;
END;
$$;
CREATE TRIGGER oauth_clients_auth_notify AFTER UPDATE OR DELETE ON oauth_clients
    FOR EACH ROW EXECUTE FUNCTION registrar_notify_clients();

ALTER TABLE oauth_clients
    ADD COLUMN signing_alg text NOT NULL DEFAULT 'RS256' CHECK (signing_alg IN ('RS256', 'ES256'));
