-- Remote workers (`openfactory worker`), enrolled with a token an operator
-- creates; the token is stored only as its SHA-256. Their jobs' `worker`
-- column is `worker:<name>`.
CREATE TABLE workers (
    name           TEXT PRIMARY KEY,
    prefix         TEXT NOT NULL,
    token_hash     TEXT NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    last_seen_at   BIGINT,
    revoked_at     BIGINT,
    -- What it said it can do when it last claimed: arch, kvm, disk, cores.
    capabilities_json  TEXT
);

-- What a job needs of the worker that runs it.
ALTER TABLE builds ADD COLUMN arch TEXT NOT NULL DEFAULT 'amd64';
ALTER TABLE builds ADD COLUMN disk_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE test_runs ADD COLUMN arch TEXT NOT NULL DEFAULT 'amd64';
ALTER TABLE test_runs ADD COLUMN disk_bytes BIGINT NOT NULL DEFAULT 0;
