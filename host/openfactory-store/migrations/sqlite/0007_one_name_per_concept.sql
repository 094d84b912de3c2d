-- One name per concept (ARCHITECTURE.md, "Vocabulary"): a recipe's *id* is
-- what callers name it by (a template id or the name of one of their
-- recipes); its *digest* is the sha256 of its canonical content and the
-- plugins it uses. The ISO's size is in bytes, and says so.
ALTER TABLE builds RENAME COLUMN recipe_id TO recipe_digest;
ALTER TABLE builds RENAME COLUMN iso_size TO iso_size_bytes;
ALTER TABLE recipes RENAME COLUMN recipe_hash TO recipe_digest;
-- Written, never read: the multi-worker queue will bring its own leases.
ALTER TABLE builds DROP COLUMN heartbeat_at;
