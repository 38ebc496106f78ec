-- Core schema of registrar. Append-only: never edit a migration that has landed.

CREATE TABLE users (
    id                      uuid PRIMARY KEY,
    username                text NOT NULL,
    email                   text NOT NULL,
    first_name              text NOT NULL DEFAULT '',
    last_name               text NOT NULL DEFAULT '',
    enabled                 boolean NOT NULL DEFAULT true,
    verified                boolean NOT NULL DEFAULT false,
    password_hash           text,
    password_updated        timestamptz,
    failed_login_attempts   integer NOT NULL DEFAULT 0,
    locked_until            timestamptz,
    last_login_attempt      timestamptz,
    last_successful_login   timestamptz,
    -- Every access token issued before this instant is invalid ("revoke all").
    tokens_not_before       timestamptz NOT NULL DEFAULT to_timestamp(0),
    created_at              timestamptz NOT NULL DEFAULT now(),
    last_modified           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_username_format CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    CONSTRAINT users_email_nonempty CHECK (length(email) BETWEEN 3 AND 254)
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
-- Keyset pagination of the user list.
CREATE INDEX users_username_order ON users (lower(username), id);

CREATE TABLE roles (
    name        text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    permissions text[] NOT NULL DEFAULT '{}',
    builtin     boolean NOT NULL DEFAULT false
);
INSERT INTO roles (name, description, permissions, builtin) VALUES
    ('Administrator', 'Site administrator: every permission', ARRAY['ADMIN', 'USER_MANAGEMENT'], true),
    ('UserManager', 'Manages other users', ARRAY['USER_MANAGEMENT'], true),
    ('Non-Expiring', 'XNAT role: account does not expire', ARRAY[]::text[], true);

CREATE TABLE user_roles (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role ON user_roles (role, user_id);

CREATE TABLE sessions (
    id                  uuid PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    method              text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    client_ip           text,
    user_agent          text,
    revoked_at          timestamptz,
    -- sha256 of the opaque browser cookie secret
    cookie_hash         bytea UNIQUE
);
CREATE INDEX sessions_user ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at     timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    prefix       text NOT NULL UNIQUE,
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE groups (
    name        text PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    project_id  text,
    level       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX groups_name_ci ON groups (lower(name));

CREATE TABLE user_groups (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_name text NOT NULL REFERENCES groups (name) ON DELETE CASCADE ON UPDATE CASCADE,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, group_name)
);
CREATE INDEX user_groups_group ON user_groups (group_name, user_id);

-- Append-only change log. No route updates or deletes it.
CREATE TABLE change_log (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    actor_id         uuid,
    actor_username   text,
    actor_session_id uuid,
    actor_api_key_id uuid,
    subject_type     text NOT NULL,
    subject_id       text NOT NULL,
    action           text NOT NULL,
    changes          jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_id       text,
    client_ip        text
);
CREATE INDEX change_log_subject ON change_log (subject_type, subject_id, id DESC);
CREATE INDEX change_log_actor ON change_log (actor_id, id DESC);

-- Server-generated secrets shared by every instance (JWT signing key, API key pepper).
CREATE TABLE server_secrets (
    name       text PRIMARY KEY,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
