-- SQLite: booleans, and a sequence number for audit events.
--
-- SQLite has no boolean storage class: a boolean is an INTEGER 0 or 1 (sqlx's Any driver also
-- refuses columns declared BOOLEAN), so orgs.require_mfa and refresh_tokens.grace_used stay as
-- they are, and the new refresh_families.mfa is an INTEGER checked to be 0 or 1. PostgreSQL's
-- twin of this file makes them real BOOLEANs.

-- refresh_families.factors ('pwd' or 'pwd,otp'): the password is always a factor, so the list
-- carries one fact, whether a second factor (TOTP or a recovery code) completed the login.
ALTER TABLE refresh_families ADD COLUMN mfa INTEGER NOT NULL DEFAULT 0 CHECK (mfa IN (0, 1));
UPDATE refresh_families SET mfa = (factors LIKE '%otp%');
ALTER TABLE refresh_families DROP COLUMN factors;

-- audit_events.seq: events of one millisecond keep the order they were recorded in (the uuid
-- id, which broke ties before, is random). A column with AUTOINCREMENT can only be added by
-- rebuilding the table; audit_events has no foreign keys in either direction, so the rebuild
-- touches nothing else. Old rows are numbered in (at, id) order, the order they were listed in.
CREATE TABLE audit_events_seq (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,                  -- uuid v4
    at BIGINT NOT NULL,                       -- unix milliseconds, UTC
    event TEXT NOT NULL,
    principal_id TEXT,
    org_id TEXT,
    client TEXT,
    request_id TEXT,
    user_agent TEXT,
    details TEXT NOT NULL
);
INSERT INTO audit_events_seq (id, at, event, principal_id, org_id, client, request_id, user_agent, details)
    SELECT id, at, event, principal_id, org_id, client, request_id, user_agent, details
    FROM audit_events ORDER BY at, id;
DROP TABLE audit_events;
ALTER TABLE audit_events_seq RENAME TO audit_events;
CREATE INDEX audit_events_org_at ON audit_events (org_id, at, seq);
CREATE INDEX audit_events_at ON audit_events (at, seq);
CREATE INDEX audit_events_principal_at ON audit_events (principal_id, at, seq);
