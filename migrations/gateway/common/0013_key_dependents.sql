-- Which pepper key made a login's CSRF token (a MAC of the family id, re-issued at every
-- refresh), so `zonegate keys status` can count the logins an old pepper still serves and
-- `keys retire` can refuse while any does. NULL for logins made before this column: they are
-- counted against every old pepper until they refresh or expire.
ALTER TABLE refresh_families ADD COLUMN csrf_key TEXT;
