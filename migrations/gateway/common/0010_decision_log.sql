-- The decision log: every authorisation decision's inputs and answer, for `zonegate policy
-- diff`. The record column holds the whole record as JSON (see gateway/src/domain/decisions);
-- the other columns are what it is selected by. Kept [decision_log] retention_days (30).
CREATE TABLE decision_log (
    id TEXT PRIMARY KEY,                      -- unique per decision: process prefix + counter
    at BIGINT NOT NULL,                       -- unix milliseconds, UTC
    request_id TEXT NOT NULL,
    route TEXT NOT NULL,
    org_id TEXT,
    principal_kind TEXT NOT NULL,             -- anonymous | user | api_key
    decision TEXT NOT NULL,                   -- allow | deny
    record TEXT NOT NULL                      -- JSON
);
CREATE INDEX decision_log_at ON decision_log (at, id);
CREATE INDEX decision_log_org_at ON decision_log (org_id, at);
