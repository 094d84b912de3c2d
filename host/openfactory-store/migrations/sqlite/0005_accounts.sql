-- Accounts (signed-in callers, owner id `account:<id>`) and their MCP API
-- keys. A key is stored only as the SHA-256 of its secret (keys are 160
-- random bits, so a fast hash is enough); its prefix is kept to tell keys apart.
CREATE TABLE accounts (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE mcp_keys (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);

CREATE INDEX mcp_keys_by_account ON mcp_keys (account_id, created_at);
