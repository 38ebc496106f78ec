-- The data tracker's permission types as registrar roles (one role per
-- type; USER_MANAGEMENT is the existing UserManager role). A role carries
-- the permission of its name; what a permission implies (USER_MANAGEMENT
-- and DATA_EDIT imply USER_ADD and USER_SEARCH, DATA_MANAGEMENT implies
-- DATA_EDIT and OWNERS_READ) is registrar's rule (`domain::Permission`).
INSERT INTO roles (name, description, permissions, builtin) VALUES
    ('DataEditor', 'Data tracker DATA_EDIT: edits the orders, datasets and collections it is an editor of', ARRAY['DATA_EDIT'], true),
    ('DataManager', 'Data tracker DATA_MANAGEMENT: modifies any order, dataset or project', ARRAY['DATA_MANAGEMENT'], true),
    ('OwnersReader', 'Data tracker OWNERS_READ: reads the owner information of every entity', ARRAY['OWNERS_READ'], true),
    ('UserAdder', 'Adds users (USER_ADD)', ARRAY['USER_ADD'], true),
    ('UserSearcher', 'Lists and searches users (USER_SEARCH)', ARRAY['USER_SEARCH'], true);

-- A session started by presenting an API key (the data tracker's
-- `POST /api/v1/login/apikey`) names the key: it ends when the key is
-- revoked, never counts as a recent login (`auth::reauth`), and never
-- outlives the key's expiry.
ALTER TABLE sessions ADD COLUMN api_key_id uuid REFERENCES api_keys (id) ON DELETE CASCADE;
CREATE INDEX sessions_api_key ON sessions (api_key_id) WHERE api_key_id IS NOT NULL AND revoked_at IS NULL;

CREATE FUNCTION registrar_end_key_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions SET revoked_at = NEW.revoked_at
    WHERE api_key_id = NEW.id AND revoked_at IS NULL;
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_end_sessions AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION registrar_end_key_sessions();
