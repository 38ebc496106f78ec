-- Passkeys (WebAuthn): a user's registered credentials, and the ceremonies
-- in flight (the server state between sending a challenge and checking
-- what the authenticator signed).

-- A credential is public data (its public key and counters); nothing here
-- is a secret. The static state (public key, extensions) never changes;
-- the dynamic state (signature counter, backup and UV flags) moves
-- forward with each use.
CREATE TABLE mfa_passkeys (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id bytea NOT NULL UNIQUE,
    name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    transports smallint NOT NULL,
    static_state bytea NOT NULL,
    dynamic_state bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE INDEX mfa_passkeys_user ON mfa_passkeys (user_id);

-- A ceremony in flight, keyed by its challenge (16 random bytes the
-- authenticator signs). Single use; minutes long. `purpose` says what it
-- may finish: a registration of `user_id`'s, a login, the second step of
-- the login whose mfa_token hashes to `bound`, or a step-up in the session
-- `bound` names.
CREATE TABLE webauthn_ceremonies (
    challenge bytea PRIMARY KEY,
    purpose text NOT NULL CHECK (purpose IN ('register', 'login', 'second_factor', 'step_up')),
    user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    bound bytea,
    state bytea NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX webauthn_ceremonies_expiry ON webauthn_ceremonies (expires_at);

