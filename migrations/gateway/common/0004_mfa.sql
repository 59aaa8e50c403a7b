-- TOTP second factor and its recovery codes.
--
-- A user has at most one 'active' credential (what logins are checked against) and at most one
-- 'pending' one (enrolled but not yet confirmed with a valid code). Re-enrolling writes only the
-- pending slot, so the active secret keeps working until the new one is confirmed; confirming
-- deletes the active row and turns the pending row into the active one in one transaction.
CREATE TABLE totp_credentials (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state TEXT NOT NULL,                      -- 'pending' | 'active'
    sealed_secret TEXT NOT NULL,              -- zt1$<totp key id>$<base64url nonce||ciphertext>
    created_at BIGINT NOT NULL,
    confirmed_at BIGINT,
    last_step BIGINT,                         -- last accepted 30 s step; older or equal is replay
    PRIMARY KEY (user_id, state)
);

-- Single-use recovery codes, stored only as the hex SHA-256 of their canonical form (they carry
-- 125 random bits, so a fast hash is enough). Replaced as a set when a credential is confirmed.
CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);
