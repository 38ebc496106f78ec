-- Resource permissions: "may <method> the <resource_type> <resource_id>"
-- (no resource_id: every resource of the type; method `any`: every method),
-- granted to groups. MLTE's groups and permissions round-trip through these
-- exactly; registrar enforces them on the MLTE API (see README).
CREATE TABLE resource_permissions (
    id            bigserial PRIMARY KEY,
    resource_type text NOT NULL CHECK (resource_type ~ '^[a-z][a-z0-9_]{0,63}$'),
    resource_id   text CHECK (resource_id IS NULL OR length(resource_id) BETWEEN 1 AND 256),
    method        text NOT NULL CHECK (method IN ('get', 'post', 'put', 'delete', 'any')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX resource_permissions_key ON resource_permissions (resource_type, COALESCE(resource_id, ''), method);

CREATE TABLE group_permissions (
    group_name    text NOT NULL REFERENCES groups (name) ON DELETE CASCADE ON UPDATE CASCADE,
    permission_id bigint NOT NULL REFERENCES resource_permissions (id) ON DELETE CASCADE,
    PRIMARY KEY (group_name, permission_id)
);
CREATE INDEX group_permissions_permission ON group_permissions (permission_id);

-- MLTE's resource types, each with its four methods on every resource (as
-- MLTE seeds them).
INSERT INTO resource_permissions (resource_type, resource_id, method)
SELECT t, NULL, m
FROM unnest(ARRAY['model', 'user', 'group', 'catalog', 'custom_list']) AS t,
     unnest(ARRAY['get', 'post', 'put', 'delete']) AS m;
