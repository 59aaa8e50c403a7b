-- Security audit trail (OWASP logging vocabulary event names), kept for 12 months by a purge
-- job. The application only inserts, reads, exports and purges old rows: never updates.
-- No foreign keys on purpose: the trail must outlive the users, orgs and keys it mentions.
-- Only ids and non-secret facts are stored; never passwords, tokens or key secrets.

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,                      -- uuid v4
    at BIGINT NOT NULL,                       -- unix seconds, UTC
    event TEXT NOT NULL,                      -- e.g. authn_login_fail
    principal_id TEXT,
    org_id TEXT,
    client TEXT,                              -- client IP address
    request_id TEXT,
    user_agent TEXT,                          -- truncated, control characters escaped
    details TEXT NOT NULL                     -- small JSON object
);
CREATE INDEX audit_events_org_at ON audit_events (org_id, at);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_principal_at ON audit_events (principal_id, at);
