-- The fleet's shared log: every node appends its decisions; seq is the one order every
-- node reads in. Writers serialise on an advisory lock (see fleet/link.py), so a reader
-- that has seen seq N has seen every row below N: no gap can commit later.
CREATE TABLE IF NOT EXISTS fleet_decisions (
    seq bigserial PRIMARY KEY,
    node text NOT NULL,
    key text NOT NULL,               -- the publisher's outbox key: a retry is a no-op
    target text NOT NULL,
    action text NOT NULL,
    until double precision,          -- epoch seconds; NULL only for releases
    basis text NOT NULL,             -- how the publisher proved it (fleet/rules.py BASES)
    reason text NOT NULL,
    at double precision NOT NULL,    -- when the publisher decided (its clock; display only)
    stored_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (node, key)
);
CREATE INDEX IF NOT EXISTS fleet_decisions_target ON fleet_decisions (target, seq);

CREATE TABLE IF NOT EXISTS fleet_nodes (
    node text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    read_seq bigint NOT NULL DEFAULT 0,
    lag_seconds double precision,    -- stored_at of the last row taken in -> taken in
    queued integer NOT NULL DEFAULT 0
);

-- One wake-up per inserting statement (a batch of 500 is one NOTIFY); the payload is
-- empty on purpose: listeners read the table from their last seq, never the payload.
CREATE OR REPLACE FUNCTION fleet_decisions_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sipdeflect_fleet', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS fleet_decisions_notify ON fleet_decisions;
CREATE TRIGGER fleet_decisions_notify AFTER INSERT ON fleet_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_decisions_notify();
