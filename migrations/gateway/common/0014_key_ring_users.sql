-- Which running gateway instances make new material with which keys: each instance records
-- its active key ids at start and every minute, and removes them when it stops. `zonegate keys
-- retire` refuses a key an instance was seen using within the last three minutes, since that
-- instance still signs, hashes or seals with it until it is restarted.
CREATE TABLE key_ring_users (
    instance_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (instance_id, key_id)
);
