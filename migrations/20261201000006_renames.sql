-- Usernames a user had before a rename. An old name stays with its user:
-- nobody else may take it (links, scripts and XNAT clients still say it),
-- and addressing it answers 404 `user_renamed` naming the new one. The
-- user may take it back (the row goes).
CREATE TABLE username_history (
    name_key   text PRIMARY KEY,
    username   text NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    renamed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX username_history_user ON username_history (user_id);
