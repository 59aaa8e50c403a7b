-- Delivery zones, one row per zone, always scoped by org.
CREATE TABLE zones (
    -- UUID v4, lowercase hyphenated text.
    id         TEXT PRIMARY KEY NOT NULL,
    org        TEXT NOT NULL,
    name       TEXT NOT NULL,
    -- GeoJSON Polygon or MultiPolygon, validated by the service before insert.
    area       TEXT NOT NULL,
    -- Bounding box of `area`, so coverage queries pre-filter in SQL and run
    -- the exact point-in-polygon test on candidates only.
    min_lon    REAL NOT NULL,
    min_lat    REAL NOT NULL,
    max_lon    REAL NOT NULL,
    max_lat    REAL NOT NULL,
    -- RFC 3339 UTC with fixed-width microseconds, so text order is time order.
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CHECK (min_lon <= max_lon AND min_lat <= max_lat)
) STRICT;

-- Listing: WHERE org = ? ORDER BY created_at, id.
CREATE INDEX zones_by_org_created ON zones (org, created_at, id);

-- Coverage: WHERE org = ? AND min_lon <= ? AND max_lon >= ? AND ...
CREATE INDEX zones_by_org_bbox ON zones (org, min_lon, max_lon, min_lat, max_lat);
