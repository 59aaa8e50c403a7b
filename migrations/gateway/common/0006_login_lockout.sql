-- Per-account failed-login lockout (see README, "Failed logins").
--
-- failed_logins counts consecutive failed password logins; a success or a completed password
-- reset sets it back to 0. It is only ever changed by single atomic UPDATE statements
-- (failed_logins = failed_logins + 1), so concurrent failures are all counted.
-- last_failed_at (unix seconds) is when the latest counted failure happened; the growing delay
-- is measured from it.
ALTER TABLE users ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_failed_at BIGINT;
