-- A membership change always takes its group's row (FOR NO KEY UPDATE),
-- also when it does not move the group's last_modified. The UPDATE alone
-- skipped the row, without waiting for its lock, when last_modified was
-- already at or after the changing transaction's now(): so a writer that
-- held the group locked to change its members (SCIM) could still see the
-- members change under it. Locking first and updating only when the time
-- moves keeps one row version per transaction (a bulk change of 10,000
-- members does not write 10,000 versions of its group).
CREATE OR REPLACE FUNCTION registrar_group_touched() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM groups WHERE name = COALESCE(NEW.group_name, OLD.group_name) FOR NO KEY UPDATE;
    UPDATE groups SET last_modified = now()
    WHERE name = COALESCE(NEW.group_name, OLD.group_name) AND last_modified < now();
    RETURN NULL;
END $$;
