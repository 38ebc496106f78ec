-- Projects, project membership through groups, and project access requests.

CREATE TABLE projects (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    description   text NOT NULL DEFAULT '',
    pi            text NOT NULL DEFAULT '',
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_modified timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projects_id_format CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$')
);
CREATE UNIQUE INDEX projects_id_key ON projects (lower(id));

ALTER TABLE groups
    ADD CONSTRAINT groups_project_fk FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE ON UPDATE CASCADE,
    ADD CONSTRAINT groups_level_check CHECK (level IS NULL OR level IN ('owner', 'member', 'collaborator')),
    ADD CONSTRAINT groups_name_format CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$');

-- A user holds at most one level per project: the project of a membership is
-- copied onto the row so that the database itself enforces it.
ALTER TABLE user_groups ADD COLUMN project_id text REFERENCES projects (id) ON DELETE CASCADE ON UPDATE CASCADE;
CREATE UNIQUE INDEX user_groups_one_level ON user_groups (user_id, project_id) WHERE project_id IS NOT NULL;
CREATE INDEX user_groups_project ON user_groups (project_id) WHERE project_id IS NOT NULL;

CREATE TABLE access_requests (
    par_id        bigserial PRIMARY KEY,
    project_id    text NOT NULL REFERENCES projects (id) ON DELETE CASCADE ON UPDATE CASCADE,
    level         text NOT NULL CHECK (level IN ('owner', 'member', 'collaborator')),
    -- 'invitation': an owner invites someone; 'request': a user asks to join.
    kind          text NOT NULL CHECK (kind IN ('invitation', 'request')),
    -- The person the request is for, once known (an email invitation may
    -- wait for an account with that verified email).
    user_id       uuid REFERENCES users (id) ON DELETE CASCADE,
    email         text,
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'declined')),
    decided_at    timestamptz,
    decided_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT access_requests_target CHECK (user_id IS NOT NULL OR email IS NOT NULL)
);
CREATE UNIQUE INDEX access_requests_open_user ON access_requests (project_id, user_id) WHERE status = 'pending' AND user_id IS NOT NULL;
CREATE UNIQUE INDEX access_requests_open_email ON access_requests (project_id, lower(email)) WHERE status = 'pending' AND user_id IS NULL;
CREATE INDEX access_requests_waiting_email ON access_requests (lower(email)) WHERE status = 'pending' AND user_id IS NULL;
CREATE INDEX access_requests_user ON access_requests (user_id) WHERE status = 'pending';
