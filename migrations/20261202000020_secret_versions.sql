-- Rotating secrets (`registrar admin rotate-secrets`): every version of the
-- JWT signing key and of the API-key pepper. The newest signs and hashes;
-- older JWT keys verify until the tokens they signed have expired, older
-- peppers while API keys still use them (a key is re-hashed under the
-- newest pepper at its next use). Version 1 of each is the secret of
-- `server_secrets`, copied at start-up.
CREATE TABLE secret_versions (
    name       text NOT NULL CHECK (name IN ('jwt_signing_key', 'api_key_pepper')),
    version    integer NOT NULL CHECK (version >= 1),
    value      bytea NOT NULL CHECK (length(value) >= 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

-- The pepper version an API key's secret is hashed under.
ALTER TABLE api_keys ADD COLUMN pepper_version integer NOT NULL DEFAULT 1;

-- Every instance reloads the versions when they change.
CREATE FUNCTION registrar_notify_secrets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('registrar_secrets', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER secret_versions_notify AFTER INSERT OR UPDATE OR DELETE ON secret_versions
    FOR EACH STATEMENT EXECUTE FUNCTION registrar_notify_secrets();
