-- PostgreSQL: booleans as BOOLEAN, and a sequence number for audit events.

-- orgs.require_mfa: 0/1 integer -> boolean.
ALTER TABLE orgs ADD COLUMN require_mfa_b BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE orgs SET require_mfa_b = (require_mfa <> 0);
ALTER TABLE orgs DROP COLUMN require_mfa;
ALTER TABLE orgs RENAME COLUMN require_mfa_b TO require_mfa;

-- refresh_tokens.grace_used: 0/1 integer -> boolean.
ALTER TABLE refresh_tokens ADD COLUMN grace_used_b BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE refresh_tokens SET grace_used_b = (grace_used <> 0);
ALTER TABLE refresh_tokens DROP COLUMN grace_used;
ALTER TABLE refresh_tokens RENAME COLUMN grace_used_b TO grace_used;

-- refresh_families.factors ('pwd' or 'pwd,otp'): the password is always a factor, so the list
-- carries one fact, whether a second factor (TOTP or a recovery code) completed the login.
ALTER TABLE refresh_families ADD COLUMN mfa BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE refresh_families SET mfa = (factors LIKE '%otp%');
ALTER TABLE refresh_families DROP COLUMN factors;

-- audit_events.seq: events of one millisecond keep the order they were recorded in. An
-- identity column numbers the existing rows as it is added.
ALTER TABLE audit_events ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX audit_events_seq ON audit_events (seq);
DROP INDEX audit_events_org_at;
DROP INDEX audit_events_at;
DROP INDEX audit_events_principal_at;
CREATE INDEX audit_events_org_at ON audit_events (org_id, at, seq);
CREATE INDEX audit_events_at ON audit_events (at, seq);
CREATE INDEX audit_events_principal_at ON audit_events (principal_id, at, seq);
