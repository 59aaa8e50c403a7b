-- Device cookies (OWASP, "slow down online guessing with device cookies"): a browser that has
-- logged in to an account holds a random token (the cookie); only its SHA-256 is stored. Its
-- failed logins are counted here, apart from the account's, so failures from elsewhere never
-- delay it. A device unused for a year is forgotten (rows are pruned per user at each login).
CREATE TABLE login_devices (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    last_failed_at BIGINT
);
CREATE INDEX login_devices_user ON login_devices (user_id, last_login_at);
