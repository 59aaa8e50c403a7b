-- Invitations get a public id, so an org's admins can list and revoke pending ones without
-- ever seeing the token's hash. Rows already stored take the first half of their token hash
-- (a hash of 256 random bits: it reveals nothing about the token).
ALTER TABLE invitations ADD COLUMN id TEXT;
UPDATE invitations SET id = substr(token_hash, 1, 32);
CREATE UNIQUE INDEX invitations_id ON invitations (id);
