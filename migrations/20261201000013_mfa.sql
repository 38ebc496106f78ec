-- Multi-factor authentication: TOTP (RFC 6238), recovery codes, and the
-- short-lived challenge between a login's first step and its second.

-- One TOTP authenticator a user. The secret must be read back to check a
-- code, so it is encrypted (AES-256-GCM under a key derived from the server
-- pepper), not hashed. It counts once confirmed with a first code.
CREATE TABLE mfa_totp (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_sealed bytea NOT NULL,
    confirmed_at timestamptz,
    -- The last time step a code was accepted for: a code is good once.
    last_step bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Single-use recovery codes, HMAC-SHA-256 under the pepper.
CREATE TABLE mfa_recovery_codes (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- A first step that succeeded and waits for a second factor. Stored as the
-- SHA-256 of the token the client holds; single use; minutes long.
CREATE TABLE mfa_challenges (
    token_hash bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- How the first step was made ('pwd' or 'oidc').
    first_factor text NOT NULL CHECK (first_factor IN ('pwd', 'oidc')),
    -- The password hash and "not before" the first step was checked
    -- against (SHA-256 of the hash): a password change or "log out
    -- everywhere" in between voids the challenge.
    password_fp bytea,
    tokens_not_before timestamptz NOT NULL,
    user_agent text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE INDEX mfa_challenges_user ON mfa_challenges (user_id);

-- Whether the user has a confirmed second factor (kept by the service
-- layer with the factors, read with every credential).
ALTER TABLE users ADD COLUMN mfa_enabled boolean NOT NULL DEFAULT false;

-- When a second factor was last used in a session (step-up), and how the
-- session was earned (OpenID `amr`).
ALTER TABLE sessions ADD COLUMN mfa_at timestamptz;
ALTER TABLE sessions ADD COLUMN amr text[] NOT NULL DEFAULT '{}';
