-- Accounts, email tokens, sessions and refresh-token families.
-- Portable between SQLite and PostgreSQL: ids and hashes are TEXT, times are Unix seconds in
-- BIGINT. Every token is stored only as the hex SHA-256 of its value.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,               -- trimmed, lower-cased
    password_hash TEXT NOT NULL,              -- zg1$<pepper key id>$<bcrypt hash>
    email_verified_at BIGINT,
    created_at BIGINT NOT NULL,
    password_changed_at BIGINT NOT NULL
);

CREATE TABLE email_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,                    -- 'verify' | 'reset'
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);

-- One family per login; every refresh token descends from the login's first one.
CREATE TABLE refresh_families (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    factors TEXT NOT NULL,                    -- comma-separated: pwd[,otp]
    created_at BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,      -- never slides
    last_used_at BIGINT NOT NULL,             -- for the inactivity expiry
    revoked_at BIGINT,
    revoked_reason TEXT
);
CREATE INDEX refresh_families_user ON refresh_families (user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    parent_hash TEXT,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT,                        -- set when exchanged; presenting it again is reuse
    grace_used BIGINT NOT NULL DEFAULT 0      -- 1 once the concurrent-refresh sibling was issued
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    public_id TEXT NOT NULL UNIQUE,           -- what users see and end sessions by
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id TEXT NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    user_agent TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_family ON sessions (family_id);
