-- VMs made from builds. The owner names them; the id names their directory.
CREATE TABLE vms (
    id          TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL REFERENCES owners(id),
    name        TEXT NOT NULL,
    build_id    TEXT NOT NULL,
    memory_mb   INTEGER NOT NULL,
    vcpus       INTEGER NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (owner_id, name)
);
