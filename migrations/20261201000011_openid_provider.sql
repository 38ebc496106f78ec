-- registrar as an OpenID Provider: clients, consents, grants (one per
-- authorization: its code, refresh tokens and access tokens), and the
-- signing keys published in the JWKS.

CREATE TABLE oauth_clients (
    client_id text PRIMARY KEY,
    name text NOT NULL,
    -- HMAC-SHA-256 under the server pepper (as API keys); NULL: a public client.
    secret_hash bytea,
    first_party boolean NOT NULL DEFAULT false,
    redirect_uris text[] NOT NULL,
    post_logout_redirect_uris text[] NOT NULL DEFAULT '{}',
    scopes text[] NOT NULL,
    grant_types text[] NOT NULL,
    backchannel_logout_uri text,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- What a user allowed a third-party client (remembered; revocable).
CREATE TABLE oauth_consents (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id text NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    scopes text[] NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_id)
);

-- One authorization of a client: by a user through a registrar session
-- (authorization code), or by the client itself (client_credentials).
-- Every token it issues dies with it; it dies with its session.
CREATE TABLE oauth_grants (
    id uuid PRIMARY KEY,
    client_id text NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    user_id uuid REFERENCES users (id) ON DELETE CASCADE,
    session_id uuid REFERENCES sessions (id) ON DELETE CASCADE,
    scopes text[] NOT NULL,
    auth_time timestamptz,
    nonce text,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoked_reason text
);
CREATE INDEX oauth_grants_user ON oauth_grants (user_id) WHERE revoked_at IS NULL;
CREATE INDEX oauth_grants_session ON oauth_grants (session_id) WHERE revoked_at IS NULL;

-- Authorization codes: single use, short-lived; stored as SHA-256.
CREATE TABLE oauth_codes (
    code_hash bytea PRIMARY KEY,
    grant_id uuid NOT NULL REFERENCES oauth_grants (id) ON DELETE CASCADE,
    redirect_uri text NOT NULL,
    code_challenge text,
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);

-- Refresh tokens, rotated on each use; a used one presented again revokes
-- the grant (reuse detection). Stored as SHA-256.
CREATE TABLE oauth_refresh_tokens (
    token_hash bytea PRIMARY KEY,
    grant_id uuid NOT NULL REFERENCES oauth_grants (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at timestamptz
);
CREATE INDEX oauth_refresh_tokens_grant ON oauth_refresh_tokens (grant_id);

-- Signing keys. The newest key of each algorithm signs; a rotated key
-- (`retired_at`) stays in the JWKS until `removed_at`, when the tokens it
-- signed have expired.
CREATE TABLE op_keys (
    kid text PRIMARY KEY,
    alg text NOT NULL CHECK (alg IN ('RS256', 'ES256')),
    private_der bytea NOT NULL,
    public_jwk jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz,
    removed_at timestamptz
);
