-- Builds are jobs: a worker claims the oldest queued build, moves it through
-- its stages (progress is the overall percentage) and finishes it. The claim
-- is one UPDATE … RETURNING; on PostgreSQL the inner SELECT gains
-- `FOR UPDATE SKIP LOCKED` so that many workers can share the queue.
CREATE TABLE builds (
    id                TEXT PRIMARY KEY,
    owner_id          TEXT NOT NULL REFERENCES owners(id),
    recipe_id         TEXT NOT NULL,
    recipe_name       TEXT NOT NULL,
    recipe_json       TEXT NOT NULL,
    plan_json         TEXT NOT NULL,
    features_json     TEXT NOT NULL,
    status            TEXT NOT NULL
                      CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    stage             TEXT,
    progress          INTEGER NOT NULL DEFAULT 0,
    message           TEXT NOT NULL DEFAULT '',
    error             TEXT,
    failed_step       TEXT,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    retry_of          TEXT,
    worker            TEXT,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    heartbeat_at      BIGINT,
    iso_sha256        TEXT,
    iso_size          BIGINT,
    result_json       TEXT
);

CREATE INDEX builds_by_owner ON builds (owner_id, created_at);
CREATE INDEX builds_queue ON builds (status, created_at);
