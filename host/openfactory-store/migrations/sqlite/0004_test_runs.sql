-- Test runs are jobs too: a worker claims the oldest queued run, boots the
-- build's ISO in a throwaway VM (vm_id, so a restarted host can remove it),
-- runs the selected checks and records the report.
CREATE TABLE test_runs (
    id               TEXT PRIMARY KEY,
    owner_id         TEXT NOT NULL REFERENCES owners(id),
    build_id         TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'running', 'passed', 'failed', 'error', 'stopped', 'timed_out')),
    stage            TEXT,
    progress         INTEGER NOT NULL DEFAULT 0,
    message          TEXT NOT NULL DEFAULT '',
    checks_json      TEXT NOT NULL,
    memory_mb        INTEGER NOT NULL,
    vcpus            INTEGER NOT NULL,
    timeout_seconds  INTEGER NOT NULL,
    stop_requested   INTEGER NOT NULL DEFAULT 0,
    vm_id            TEXT,
    worker           TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    passed           INTEGER,
    total            INTEGER,
    report_json      TEXT
);

CREATE INDEX test_runs_by_owner ON test_runs (owner_id, created_at);
CREATE INDEX test_runs_queue ON test_runs (status, created_at);
