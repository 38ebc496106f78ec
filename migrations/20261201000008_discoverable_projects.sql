-- A project its owners let non-members find (`GET /api/v1/discoverable-projects`),
-- so they can ask to join. Off by default: a project's existence is private.
ALTER TABLE projects ADD COLUMN discoverable boolean NOT NULL DEFAULT false;
CREATE INDEX projects_discoverable ON projects (lower(id)) WHERE discoverable;
