-- Lists stored as rows, audit times in milliseconds. Portable: the same SQL on SQLite (3.35+)
-- and PostgreSQL, and no table is rebuilt (so no foreign key fires on SQLite).

-- api_keys.scopes (comma-separated) -> one row per scope. Keys only ever held scopes from the
-- closed set below (checked at creation), so each is copied where the list names it.
CREATE TABLE api_key_scopes (
    key_id TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    PRIMARY KEY (key_id, scope)
);
INSERT INTO api_key_scopes (key_id, scope)
    SELECT id, 'zones:read' FROM api_keys WHERE ',' || scopes || ',' LIKE '%,zones:read,%';
INSERT INTO api_key_scopes (key_id, scope)
    SELECT id, 'zones:write' FROM api_keys WHERE ',' || scopes || ',' LIKE '%,zones:write,%';
INSERT INTO api_key_scopes (key_id, scope)
    SELECT id, 'coverage:read' FROM api_keys WHERE ',' || scopes || ',' LIKE '%,coverage:read,%';
ALTER TABLE api_keys DROP COLUMN scopes;

-- audit_events.at: unix seconds -> unix milliseconds.
UPDATE audit_events SET at = at * 1000;
