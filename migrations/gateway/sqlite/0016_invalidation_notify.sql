-- Invalidation across instances is PostgreSQL's (LISTEN/NOTIFY triggers, see
-- postgres/0016_invalidation_notify.sql). SQLite serves one machine, whose caches are
-- invalidated in process; this version only keeps the two sequences paired.
SELECT 1;
