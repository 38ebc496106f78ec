-- OpenID Connect: identity links and server-side login state.

CREATE TABLE oidc_identities (
    provider      text NOT NULL,
    subject       text NOT NULL,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX oidc_identities_user ON oidc_identities (user_id);

-- One row per started login, consumed (deleted) by its callback: single use,
-- and readable by whichever instance receives the callback.
CREATE TABLE oidc_states (
    state         text PRIMARY KEY,
    provider      text NOT NULL,
    nonce         text NOT NULL,
    pkce_verifier text NOT NULL,
    return_to     text,
    link_user_id  uuid REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX oidc_states_expiry ON oidc_states (expires_at);
