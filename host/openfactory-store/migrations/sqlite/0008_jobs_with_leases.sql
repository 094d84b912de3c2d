-- Builds and test runs are jobs in one queue (src/queue.rs), on SQLite and
-- PostgreSQL alike (migrations/postgres starts from this schema).
--
-- `seq` orders rows whose created_at (seconds) ties, with the same SQL on both
-- engines; here a trigger fills it from the rowid, on PostgreSQL an identity.
ALTER TABLE builds ADD COLUMN seq INTEGER;
UPDATE builds SET seq = rowid;
CREATE TRIGGER builds_seq AFTER INSERT ON builds
BEGIN UPDATE builds SET seq = NEW.rowid WHERE rowid = NEW.rowid; END;

ALTER TABLE test_runs ADD COLUMN seq INTEGER;
UPDATE test_runs SET seq = rowid;
CREATE TRIGGER test_runs_seq AFTER INSERT ON test_runs
BEGIN UPDATE test_runs SET seq = NEW.rowid WHERE rowid = NEW.rowid; END;

ALTER TABLE mcp_keys ADD COLUMN seq INTEGER;
UPDATE mcp_keys SET seq = rowid;
CREATE TRIGGER mcp_keys_seq AFTER INSERT ON mcp_keys
BEGIN UPDATE mcp_keys SET seq = NEW.rowid WHERE rowid = NEW.rowid; END;

-- A lease: the claiming worker (`worker`), the hash of the job token it was
-- given (every later report must carry the token), its last heartbeat, and
-- how many times the job was claimed (a lost worker's job is requeued a
-- bounded number of times), and why the last attempt ended early.
ALTER TABLE builds ADD COLUMN lease_token_hash TEXT;
ALTER TABLE builds ADD COLUMN heartbeat_at INTEGER;
ALTER TABLE builds ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE test_runs ADD COLUMN lease_token_hash TEXT;
ALTER TABLE test_runs ADD COLUMN heartbeat_at INTEGER;
ALTER TABLE test_runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN requeued_because TEXT;
ALTER TABLE test_runs ADD COLUMN requeued_because TEXT;

DROP INDEX builds_queue;
DROP INDEX test_runs_queue;
CREATE INDEX builds_queue ON builds (status, seq);
CREATE INDEX test_runs_queue ON test_runs (status, seq);
CREATE INDEX builds_leases ON builds (status, heartbeat_at);
CREATE INDEX test_runs_leases ON test_runs (status, heartbeat_at);

-- Flags are integers (0 or 1) on both engines: SQLite has no boolean type,
-- and one decoding path serves both.
ALTER TABLE accounts ADD COLUMN operator_flag INTEGER NOT NULL DEFAULT 0;
UPDATE accounts SET operator_flag = CASE WHEN operator THEN 1 ELSE 0 END;
ALTER TABLE accounts DROP COLUMN operator;
ALTER TABLE accounts RENAME COLUMN operator_flag TO operator;
