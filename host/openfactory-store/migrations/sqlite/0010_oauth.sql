-- OAuth 2.1 for hosted MCP clients (Claude.ai connectors and the like).
--
-- Clients that registered themselves (RFC 7591). Clients whose id is the
-- URL of their metadata document are not stored: the document is fetched.
CREATE TABLE oauth_clients (
    client_id           TEXT PRIMARY KEY,
    client_name         TEXT NOT NULL,
    redirect_uris_json  TEXT NOT NULL,
    -- `none` (a public client, PKCE only), `client_secret_basic` or `client_secret_post`.
    auth_method         TEXT NOT NULL,
    -- The SHA-256 of a confidential client's secret.
    secret_hash         TEXT,
    client_uri          TEXT,
    created_at          BIGINT NOT NULL
);

-- A grant: one account's consent to one client, a "connected client" in
-- the console. It is the family of every code and token issued under it:
-- revoking it (by its owner, or on a replayed refresh token or code)
-- revokes them all.
CREATE TABLE oauth_grants (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    client_id        TEXT NOT NULL,
    client_name      TEXT NOT NULL,
    scope            TEXT NOT NULL,
    -- The audience (RFC 8707 `resource`) its tokens are bound to.
    resource         TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    last_used_at     BIGINT,
    revoked_at       BIGINT,
    revoked_because  TEXT
);
CREATE INDEX oauth_grants_by_account ON oauth_grants (account_id, created_at);

-- Authorization codes, by the SHA-256 of the code; used once.
CREATE TABLE oauth_codes (
    code_hash       TEXT PRIMARY KEY,
    grant_id        TEXT NOT NULL REFERENCES oauth_grants(id),
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);

-- Access and refresh tokens, by the SHA-256 of the token. A refresh token
-- is used once: its use (`used_at`) issues the next one.
CREATE TABLE oauth_tokens (
    token_hash  TEXT PRIMARY KEY,
    grant_id    TEXT NOT NULL REFERENCES oauth_grants(id),
    kind        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX oauth_tokens_by_grant ON oauth_tokens (grant_id);
