-- A login whose password step passed and whose second factor is still due. The cookie holds
-- the token; only its SHA-256 is stored. `attempts` counts wrong codes for this pending login;
-- the per-account limit sums the attempts of an account's recent pending logins.
CREATE TABLE pending_logins (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    completed_at BIGINT
);
CREATE INDEX pending_logins_user ON pending_logins (user_id, created_at);
