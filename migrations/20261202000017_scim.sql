-- SCIM 2.0 provisioning (RFC 7643/7644) at /scim/v2.

-- A provisioning credential is an API key with the `scim` scope: it holds
-- SCIM_PROVISIONING and nothing else, and is refused outside /scim/v2.
ALTER TABLE api_keys ADD COLUMN scope text NOT NULL DEFAULT 'user' CHECK (scope IN ('user', 'scim'));

-- The directory's own id of a user or group, kept per provisioning client
-- (the credential's name), as RFC 7643 section 3.1 asks.
CREATE TABLE scim_external_ids (
    client text NOT NULL,
    resource_type text NOT NULL CHECK (resource_type IN ('User', 'Group')),
    resource_id uuid NOT NULL,
    external_id text NOT NULL CHECK (char_length(external_id) BETWEEN 1 AND 256),
    PRIMARY KEY (client, resource_type, resource_id),
    UNIQUE (client, resource_type, external_id)
);

-- SCIM attributes registrar has no column for (nickName, title,
-- phoneNumbers, the enterprise extension, ...), kept as sent.
ALTER TABLE users ADD COLUMN scim_extra jsonb NOT NULL DEFAULT '{}';

-- Groups get a stable id (their name may change) and a modification time
-- that membership changes move.
ALTER TABLE groups ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
CREATE UNIQUE INDEX groups_id_key ON groups (id);
ALTER TABLE groups ADD COLUMN last_modified timestamptz NOT NULL DEFAULT now();

CREATE FUNCTION registrar_group_touched() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE groups SET last_modified = now()
    WHERE name = COALESCE(NEW.group_name, OLD.group_name) AND last_modified < now();
    RETURN NULL;
END $$;
CREATE TRIGGER user_groups_touch_group AFTER INSERT OR DELETE ON user_groups
    FOR EACH ROW EXECUTE FUNCTION registrar_group_touched();

-- A directory's userName need not be a registrar username (Entra sends
-- user@example.org): SCIM's userName is this, else the username. It is
-- unique against every other user's userName and username, case aside.
ALTER TABLE users ADD COLUMN scim_user_name text CHECK (char_length(scim_user_name) BETWEEN 1 AND 256);
CREATE UNIQUE INDEX users_scim_user_name_key ON users (lower(coalesce(scim_user_name, username)));

-- External ids go with their user or group, however it is deleted.
CREATE FUNCTION registrar_scim_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM scim_external_ids WHERE resource_type = TG_ARGV[0] AND resource_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER users_scim_forget AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION registrar_scim_forget('User');
CREATE TRIGGER groups_scim_forget AFTER DELETE ON groups
    FOR EACH ROW EXECUTE FUNCTION registrar_scim_forget('Group');
