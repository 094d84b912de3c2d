-- Owners: an anonymous client is identified by its IP address (`ip:203.0.113.7`);
-- accounts arrive with the identity issue.
CREATE TABLE owners (
    id            TEXT PRIMARY KEY,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL
);

-- Recipes an owner created (from a template or from scratch). Templates live
-- in the catalog on disk, not here.
CREATE TABLE recipes (
    owner_id      TEXT NOT NULL REFERENCES owners(id),
    id            TEXT NOT NULL,
    template_id   TEXT,
    category      TEXT NOT NULL,
    recipe_json   TEXT NOT NULL,
    recipe_hash   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (owner_id, id)
);
