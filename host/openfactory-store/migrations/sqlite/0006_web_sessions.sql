-- Browser sign-ins to the web console. The cookie holds a random secret; the
-- table holds only its SHA-256, so a copy of the database signs no one in.
-- Signing out deletes the row: the cookie is then worthless.
CREATE TABLE web_sessions (
    id_hash     TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE INDEX web_sessions_by_account ON web_sessions (account_id);

-- Operators see what only operators should: plugin load problems, bundle
-- locations. Granted with `openfactory account operator EMAIL`.
ALTER TABLE accounts ADD COLUMN operator BOOLEAN NOT NULL DEFAULT FALSE;
