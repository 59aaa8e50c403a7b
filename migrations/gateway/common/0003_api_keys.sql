-- API keys: only HMAC-SHA256(pepper, secret) is stored, with the pepper's key id. A roll keeps
-- the previous MAC valid until previous_valid_until.

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,                      -- the public key id inside the key
    org_id TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,                     -- comma-separated
    secret_mac TEXT NOT NULL,
    pepper_id TEXT NOT NULL,
    hint TEXT NOT NULL,                       -- zgk_<id>_…<last 4>, safe to show
    created_by TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT,
    previous_mac TEXT,
    previous_pepper_id TEXT,
    previous_valid_until BIGINT
);
CREATE INDEX api_keys_org ON api_keys (org_id);
