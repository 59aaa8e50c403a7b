-- Platform operators: Delivery Zone's own staff, on the platform listener only. They are not
-- users (no signup, no email links, no org membership): `zonegate operators add` creates one
-- with a password and a TOTP seed, both shown once, and both are required at every login.
CREATE TABLE operators (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    -- `zg1$<pepper id>$<bcrypt>`, as users' passwords.
    password_hash TEXT NOT NULL,
    -- `zt1$<totp key id>$...`, sealed with the operator's id as associated data.
    totp_sealed TEXT NOT NULL,
    -- The last accepted TOTP step: a code is accepted once.
    totp_last_step BIGINT NOT NULL DEFAULT 0,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    last_failed_at BIGINT,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT,
    disabled_at BIGINT
);

-- Operator sessions: 15 minutes idle, 12 hours absolute (`[platform]`). Only the token's
-- SHA-256 is kept.
CREATE TABLE operator_sessions (
    token_hash TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    operator_id TEXT NOT NULL REFERENCES operators (id),
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE INDEX operator_sessions_by_operator ON operator_sessions (operator_id);

-- A user an operator disabled: no login, no session, until re-enabled.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
