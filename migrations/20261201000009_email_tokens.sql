-- Single-use links sent by mail: password reset, the welcome link of an
-- account created without a password, email verification. Only a SHA-256
-- of the token is kept; a token is bound to the address it was sent to
-- (a changed address voids it) and dies on use, on expiry, or when a newer
-- link of the same purpose is sent.
CREATE TABLE email_tokens (
    token_hash bytea PRIMARY KEY,
    purpose text NOT NULL CHECK (purpose IN ('password_reset', 'welcome', 'verify_email')),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);
