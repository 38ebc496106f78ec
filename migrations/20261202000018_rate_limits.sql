-- Rate limits shared by every instance (src/auth/limits.rs): one row per
-- limited key, holding the GCRA "theoretical arrival time" of its next
-- request. UNLOGGED: the state is worth nothing after a crash (a crash
-- resets the budgets, as a restart of one instance used to), and a check
-- writes no WAL, so it never waits for a disk flush.
CREATE UNLOGGED TABLE rate_limits (
    bucket text NOT NULL,
    key text NOT NULL,
    tat timestamptz NOT NULL,
    -- Whether the last check of this key was let through.
    allowed boolean NOT NULL DEFAULT true,
    PRIMARY KEY (bucket, key)
);
