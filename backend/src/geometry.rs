//! Zone areas: validation of client GeoJSON and point-in-area tests.
//!
//! An [`Area`] can only be built from GeoJSON that passed every check below, so
//! code holding an `Area` never has to re-ask "is this polygon sane?".
//!
//! Rules for an area:
//! - a GeoJSON geometry object of type `Polygon` or `MultiPolygon` with only the
//!   members `type` and `coordinates` (no `bbox`, no foreign members);
//! - at most [`MAX_VERTICES`] positions in total, counting every ring's closing
//!   position;
//! - every position is exactly `[longitude, latitude]`, finite, with longitude in
//!   −180..=180 and latitude in −90..=90 (altitude is rejected rather than silently
//!   dropped);
//! - every ring has at least 4 positions and is closed (first == last);
//! - every polygon is valid in the OGC sense, slightly stricter: no ring
//!   crosses or touches itself or any other ring (not even at a single point),
//!   every hole lies inside its shell, holes are not nested, and the polygons of
//!   a MultiPolygon do not overlap. Repeated consecutive positions are allowed.
//!
//! Why not `geo`'s `Validation`? In geo 0.31 its self-intersection test compares
//! every edge with every other edge: about 13 s (debug build) for one
//! 10,000-vertex ring, so a single request could pin a core. Here edges are
//! sorted by x and only edges whose bounding boxes overlap are intersected,
//! which is near-linear for real zone outlines; rings are paired the same way by
//! their bounding boxes. Contrived shapes with thousands of mutually overlapping
//! edges would stay quadratic, so every comparison is counted against
//! [`WORK_BUDGET`]: past it the area is refused as too complex, which bounds the
//! CPU one request can take whatever its shape. Forbidding all ring contact keeps
//! the rest simple: when no two rings touch, one vertex decides whether a ring
//! lies inside another.
//!
//! Coordinates are treated as planar longitude/latitude: areas crossing the
//! antimeridian are not supported (split them into a MultiPolygon instead).
//! Either ring winding order is accepted (RFC 7946 §3.1.6 says parsers should not
//! reject clockwise shells).
//!
//! Boundary semantics: a point exactly on an area's boundary (shell or hole
//! edge) **is covered**. A delivery address that geocodes onto a zone's edge is
//! served rather than dropped between two adjacent zones.
//!
//! This module must never touch the database or HTTP types; it is pure so it can
//! be unit-tested and run on a blocking thread.

use geo::algorithm::coordinate_position::{coord_pos_relative_to_ring, CoordPos};
use geo::algorithm::line_intersection::{line_intersection, LineIntersection};
use geo::{BoundingRect, Coord, CoordinatePosition, Line, LineString, MultiPolygon, Polygon};
use geojson::{Geometry, Position, Value};
use serde::{Serialize, Serializer};

/// Upper bound on positions in one area. It bounds request size and the CPU
/// spent validating one request.
pub const MAX_VERTICES: usize = 10_000;

/// Most steps (edge pairs looked at, ring pairs looked at, vertices walked when
/// testing a ring inside another) validating one area may take: a few
/// milliseconds of a core in a release build. Real zone outlines, even at
/// [`MAX_VERTICES`], use a small fraction of it.
pub const WORK_BUDGET: u64 = 4_000_000;

/// The steps left for one validation.
struct Budget(u64);

impl Budget {
    fn spend(&mut self, steps: u64) -> Result<(), GeometryError> {
        self.0 = self.0.checked_sub(steps).ok_or(GeometryError::TooComplex)?;
        Ok(())
    }
}

/// Why a client-supplied area was rejected. The messages are safe to show to
/// clients: they describe the input, never the server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeometryError {
    #[error("area must be a GeoJSON Polygon or MultiPolygon, not {0}")]
    UnsupportedType(&'static str),
    #[error("area must contain only the members \"type\" and \"coordinates\"")]
    ExtraMembers,
    #[error("area must contain at least one polygon with an exterior ring")]
    Empty,
    #[error("area must have at most {MAX_VERTICES} positions in total")]
    TooManyVertices,
    #[error("every position must be [longitude, latitude]: exactly two numbers")]
    BadPosition,
    #[error(
        "coordinates must be finite, longitude within -180..=180 and latitude within -90..=90"
    )]
    OutOfRange,
    #[error("every ring must have at least 4 positions and 3 distinct points")]
    TooFewPositions,
    #[error("every ring must be closed: its first and last positions must be equal")]
    RingNotClosed,
    #[error("a ring crosses or touches itself")]
    SelfIntersection,
    #[error("two rings cross or touch")]
    RingsTouch,
    #[error("every hole must lie inside its polygon's exterior ring")]
    HoleOutsideShell,
    #[error("holes of a polygon must not be nested")]
    NestedHoles,
    #[error("the polygons of a MultiPolygon must not overlap")]
    OverlappingPolygons,
    #[error("area is too complex to validate: simplify it or split it into several zones")]
    TooComplex,
}

impl GeometryError {
    /// The fixed text a client is shown: the same words as `Display`, but a constant (no
    /// value from the request ever reaches an error body).
    pub fn detail(&self) -> &'static str {
        match self {
            Self::UnsupportedType(_) => "area must be a GeoJSON Polygon or MultiPolygon",
            Self::ExtraMembers => "area must contain only the members \"type\" and \"coordinates\"",
            Self::Empty => "area must contain at least one polygon with an exterior ring",
            Self::TooManyVertices => "area must have at most 10000 positions in total",
            Self::BadPosition => {
                "every position must be [longitude, latitude]: exactly two numbers"
            }
            Self::OutOfRange => {
                "coordinates must be finite, longitude within -180..=180 and latitude within -90..=90"
            }
            Self::TooFewPositions => "every ring must have at least 4 positions and 3 distinct points",
            Self::RingNotClosed => {
                "every ring must be closed: its first and last positions must be equal"
            }
            Self::SelfIntersection => "a ring crosses or touches itself",
            Self::RingsTouch => "two rings cross or touch",
            Self::HoleOutsideShell => "every hole must lie inside its polygon's exterior ring",
            Self::NestedHoles => "holes of a polygon must not be nested",
            Self::OverlappingPolygons => "the polygons of a MultiPolygon must not overlap",
            Self::TooComplex => {
                "area is too complex to validate: simplify it or split it into several zones"
            }
        }
    }
}

/// Axis-aligned bounding box of an area, stored next to it so coverage queries
/// can pre-filter in SQL before the exact (and more expensive) test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min_lon: f64,
    pub min_lat: f64,
    pub max_lon: f64,
    pub max_lat: f64,
}

/// A validated zone area. Serialises as the GeoJSON geometry it was built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Area {
    geojson: Geometry,
    shape: MultiPolygon<f64>,
    bounds: Bounds,
}

impl Area {
    /// Validates client input. Roughly O(n log n) for typical shapes, but still
    /// CPU-bound, so callers on an async runtime should use a blocking thread.
    pub fn parse(geometry: Geometry) -> Result<Self, GeometryError> {
        if geometry.bbox.is_some() || geometry.foreign_members.is_some() {
            return Err(GeometryError::ExtraMembers);
        }
        let polygons = raw_polygons(&geometry.value)?;
        check_positions(&polygons)?;
        let shape = to_multi_polygon(&polygons)?;
        let mut budget = Budget(WORK_BUDGET);
        check_edges(&shape, &mut budget)?;
        check_ring_nesting(&shape, &mut budget)?;
        Self::with_shape(geometry, shape)
    }

    /// Rebuilds an area that was validated before it was stored. Only the cheap
    /// structural conversion runs again: it is all that coverage tests need.
    pub fn from_stored(geometry: Geometry) -> Result<Self, GeometryError> {
        let polygons = raw_polygons(&geometry.value)?;
        let shape = to_multi_polygon(&polygons)?;
        Self::with_shape(geometry, shape)
    }

    fn with_shape(geojson: Geometry, shape: MultiPolygon<f64>) -> Result<Self, GeometryError> {
        let rect = shape.bounding_rect().ok_or(GeometryError::Empty)?;
        let bounds = Bounds {
            min_lon: rect.min().x,
            min_lat: rect.min().y,
            max_lon: rect.max().x,
            max_lat: rect.max().y,
        };
        Ok(Self {
            geojson,
            shape,
            bounds,
        })
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    pub fn geojson(&self) -> &Geometry {
        &self.geojson
    }

    /// True when the point lies inside the area or on its boundary (see the
    /// module docs for why the boundary counts as covered).
    pub fn covers(&self, lon: f64, lat: f64) -> bool {
        matches!(
            self.shape.coordinate_position(&Coord { x: lon, y: lat }),
            CoordPos::Inside | CoordPos::OnBoundary
        )
    }
}

impl Serialize for Area {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.geojson.serialize(serializer)
    }
}

/// True for a longitude/latitude pair this service accepts anywhere (areas and
/// coverage queries alike).
pub fn is_valid_lon_lat(lon: f64, lat: f64) -> bool {
    // `contains` is false for NaN, and infinities fall outside the ranges.
    (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat)
}

/// Polygons as raw GeoJSON rings, whichever of the two accepted types arrived.
fn raw_polygons(value: &Value) -> Result<Vec<&[Vec<Position>]>, GeometryError> {
    let polygons: Vec<&[Vec<Position>]> = match value {
        Value::Polygon(rings) => vec![rings.as_slice()],
        Value::MultiPolygon(polygons) => polygons.iter().map(Vec::as_slice).collect(),
        other => return Err(GeometryError::UnsupportedType(other.type_name())),
    };
    if polygons.is_empty() || polygons.iter().any(|rings| rings.is_empty()) {
        return Err(GeometryError::Empty);
    }
    Ok(polygons)
}

/// Cheap, linear checks on the raw positions. They run before any geometry is
/// built so oversized or malformed input is rejected without further work.
fn check_positions(polygons: &[&[Vec<Position>]]) -> Result<(), GeometryError> {
    let rings = || polygons.iter().flat_map(|rings| rings.iter());
    let total: usize = rings().map(Vec::len).sum();
    if total > MAX_VERTICES {
        return Err(GeometryError::TooManyVertices);
    }
    for ring in rings() {
        for position in ring {
            let [lon, lat] = position.as_slice() else {
                return Err(GeometryError::BadPosition);
            };
            if !is_valid_lon_lat(*lon, *lat) {
                return Err(GeometryError::OutOfRange);
            }
        }
        if ring.len() < 4 {
            return Err(GeometryError::TooFewPositions);
        }
        // Exact float equality is intended: GeoJSON requires the closing
        // position to be identical, not merely close.
        if ring.first() != ring.last() {
            return Err(GeometryError::RingNotClosed);
        }
    }
    Ok(())
}

/// Builds the `geo` shape. Repeated consecutive positions are dropped here (they
/// are legal GeoJSON but would create zero-length edges); what remains must
/// still be a ring of at least 3 distinct points.
fn to_multi_polygon(polygons: &[&[Vec<Position>]]) -> Result<MultiPolygon<f64>, GeometryError> {
    let polygons = polygons.iter().map(|rings| {
        let mut rings = rings.iter().map(|ring| to_ring(ring));
        let exterior = rings.next().ok_or(GeometryError::Empty)??;
        let interiors = rings.collect::<Result<Vec<_>, _>>()?;
        Ok(Polygon::new(exterior, interiors))
    });
    polygons
        .collect::<Result<Vec<_>, _>>()
        .map(MultiPolygon::new)
}

fn to_ring(positions: &[Position]) -> Result<LineString<f64>, GeometryError> {
    let mut coords = positions
        .iter()
        .map(|position| match position.as_slice() {
            [x, y] => Ok(Coord { x: *x, y: *y }),
            _ => Err(GeometryError::BadPosition),
        })
        .collect::<Result<Vec<_>, _>>()?;
    coords.dedup();
    // Closed, so 4 coordinates means 3 distinct points.
    if coords.len() < 4 {
        return Err(GeometryError::TooFewPositions);
    }
    Ok(LineString::new(coords))
}

/// One edge of one ring, remembering where it came from so that neighbouring
/// edges (which share a vertex by construction) can be told apart from real
/// intersections.
struct Edge {
    ring: usize,
    index: usize,
    ring_edges: usize,
    line: Line<f64>,
}

impl Edge {
    fn min_x(&self) -> f64 {
        self.line.start.x.min(self.line.end.x)
    }

    fn max_x(&self) -> f64 {
        self.line.start.x.max(self.line.end.x)
    }

    fn y_range_overlaps(&self, other: &Edge) -> bool {
        let (a, b) = (&self.line, &other.line);
        a.start.y.min(a.end.y) <= b.start.y.max(b.end.y)
            && b.start.y.min(b.end.y) <= a.start.y.max(a.end.y)
    }

    fn is_neighbour_of(&self, other: &Edge) -> bool {
        let (low, high) = (self.index.min(other.index), self.index.max(other.index));
        // The last edge closes the ring, so it neighbours the first one.
        self.ring == other.ring && (high - low == 1 || (low == 0 && high == self.ring_edges - 1))
    }
}

/// Rejects any contact between edges except neighbouring edges of one ring
/// meeting at their shared vertex. Edges are sorted by their left x and each is
/// compared only with edges whose x-range overlaps its own.
fn check_edges(shape: &MultiPolygon<f64>, budget: &mut Budget) -> Result<(), GeometryError> {
    let rings = shape
        .iter()
        .flat_map(|polygon| std::iter::once(polygon.exterior()).chain(polygon.interiors()));
    let mut edges: Vec<Edge> = rings
        .enumerate()
        .flat_map(|(ring, line_string)| {
            let ring_edges = line_string.0.len() - 1;
            line_string
                .lines()
                .enumerate()
                .map(move |(index, line)| Edge {
                    ring,
                    index,
                    ring_edges,
                    line,
                })
        })
        .collect();
    edges.sort_by(|a, b| a.min_x().total_cmp(&b.min_x()));

    for (i, edge) in edges.iter().enumerate() {
        let x_overlapping = edges[i + 1..]
            .iter()
            .take_while(|other| other.min_x() <= edge.max_x());
        for other in x_overlapping {
            budget.spend(1)?;
            if !edge.y_range_overlaps(other) {
                continue;
            }
            let Some(contact) = line_intersection(edge.line, other.line) else {
                continue;
            };
            if edge.ring != other.ring {
                return Err(GeometryError::RingsTouch);
            }
            let shared_vertex_only = matches!(contact, LineIntersection::SinglePoint { .. });
            if !(edge.is_neighbour_of(other) && shared_vertex_only) {
                return Err(GeometryError::SelfIntersection);
            }
        }
    }
    Ok(())
}

/// With no ring touching another (see [`check_edges`]), every ring lies wholly
/// inside or wholly outside each other ring, so testing one vertex decides. Only
/// rings whose bounding boxes overlap can nest, so pairs come from a sweep over
/// the boxes sorted by their left x, as edges do.
fn check_ring_nesting(shape: &MultiPolygon<f64>, budget: &mut Budget) -> Result<(), GeometryError> {
    let polygons = &shape.0;
    for polygon in polygons {
        let holes = polygon.interiors();
        for hole in holes {
            budget.spend(ring_steps(polygon.exterior()))?;
            if !ring_inside_ring(hole, polygon.exterior()) {
                return Err(GeometryError::HoleOutsideShell);
            }
        }
        for_overlapping_boxes(holes, budget, |h, o, budget| {
            let (hole, other) = (&holes[h], &holes[o]);
            budget.spend(ring_steps(hole) + ring_steps(other))?;
            if ring_inside_ring(hole, other) || ring_inside_ring(other, hole) {
                return Err(GeometryError::NestedHoles);
            }
            Ok(())
        })?;
    }
    let exteriors: Vec<LineString<f64>> = polygons.iter().map(|p| p.exterior().clone()).collect();
    for_overlapping_boxes(&exteriors, budget, |a, b, budget| {
        let (pa, pb) = (&polygons[a], &polygons[b]);
        budget.spend(ring_steps(pa.exterior()) + ring_steps(pb.exterior()))?;
        // A polygon sitting in the other's hole is fine (an island in a lake);
        // the polygon test, not the shell test, accounts for holes.
        if ring_inside_polygon(pa.exterior(), pb) || ring_inside_polygon(pb.exterior(), pa) {
            return Err(GeometryError::OverlappingPolygons);
        }
        Ok(())
    })
}

/// Steps to test a vertex against a ring (with its holes, roughly): its length.
fn ring_steps(ring: &LineString<f64>) -> u64 {
    ring.0.len() as u64
}

/// Calls `f` with the indices of every pair of rings whose bounding boxes
/// overlap, each pair once.
fn for_overlapping_boxes(
    rings: &[LineString<f64>],
    budget: &mut Budget,
    mut f: impl FnMut(usize, usize, &mut Budget) -> Result<(), GeometryError>,
) -> Result<(), GeometryError> {
    let mut boxed: Vec<(geo::Rect<f64>, usize)> = rings
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.bounding_rect().map(|b| (b, i)))
        .collect();
    boxed.sort_by(|a, b| a.0.min().x.total_cmp(&b.0.min().x));
    for (i, (rect, ring)) in boxed.iter().enumerate() {
        for (other_rect, other) in boxed[i + 1..]
            .iter()
            .take_while(|(o, _)| o.min().x <= rect.max().x)
        {
            budget.spend(1)?;
            let y_overlaps =
                rect.min().y <= other_rect.max().y && other_rect.min().y <= rect.max().y;
            if y_overlaps {
                f(*ring, *other, budget)?;
            }
        }
    }
    Ok(())
}

fn ring_inside_ring(inner: &LineString<f64>, outer: &LineString<f64>) -> bool {
    inner
        .0
        .first()
        .is_some_and(|vertex| coord_pos_relative_to_ring(*vertex, outer) == CoordPos::Inside)
}

fn ring_inside_polygon(inner: &LineString<f64>, outer: &Polygon<f64>) -> bool {
    inner
        .0
        .first()
        .is_some_and(|vertex| outer.coordinate_position(vertex) == CoordPos::Inside)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn geometry(value: serde_json::Value) -> Geometry {
        serde_json::from_value(value).unwrap()
    }

    fn parse(value: serde_json::Value) -> Result<Area, GeometryError> {
        Area::parse(geometry(value))
    }

    fn square() -> serde_json::Value {
        json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]]]})
    }

    #[test]
    fn accepts_a_simple_polygon_and_computes_bounds() {
        let area = parse(square()).unwrap();
        assert_eq!(
            area.bounds(),
            Bounds {
                min_lon: 0.0,
                min_lat: 0.0,
                max_lon: 10.0,
                max_lat: 10.0
            }
        );
        assert_eq!(serde_json::to_value(&area).unwrap(), square());
    }

    #[test]
    fn accepts_polygon_with_hole_and_clockwise_shell() {
        let area = parse(json!({"type": "Polygon", "coordinates": [
            [[0.0, 0.0], [0.0, 10.0], [10.0, 10.0], [10.0, 0.0], [0.0, 0.0]],
            [[4.0, 4.0], [6.0, 4.0], [6.0, 6.0], [4.0, 6.0], [4.0, 4.0]]
        ]}))
        .unwrap();
        assert!(area.covers(1.0, 1.0));
        assert!(!area.covers(5.0, 5.0), "inside the hole is not covered");
        assert!(
            area.covers(4.0, 5.0),
            "the hole's edge is boundary, so covered"
        );
    }

    #[test]
    fn accepts_disjoint_multipolygon() {
        let area = parse(json!({"type": "MultiPolygon", "coordinates": [
            [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]],
            [[[5.0, 5.0], [6.0, 5.0], [6.0, 6.0], [5.0, 5.0]]]
        ]}))
        .unwrap();
        assert!(area.covers(5.9, 5.1));
        assert!(!area.covers(3.0, 3.0));
        assert_eq!(area.bounds().max_lon, 6.0);
    }

    #[test]
    fn boundary_and_vertices_are_covered_outside_is_not() {
        let area = parse(square()).unwrap();
        assert!(area.covers(5.0, 5.0));
        assert!(area.covers(10.0, 5.0), "edge");
        assert!(area.covers(0.0, 0.0), "vertex");
        assert!(!area.covers(10.000_001, 5.0));
        assert!(!area.covers(-5.0, -5.0));
    }

    #[test]
    fn rejects_other_geometry_types() {
        let err = parse(json!({"type": "Point", "coordinates": [1.0, 2.0]})).unwrap_err();
        assert_eq!(err, GeometryError::UnsupportedType("Point"));
        let err = parse(json!({"type": "LineString", "coordinates": [[1.0, 2.0], [3.0, 4.0]]}))
            .unwrap_err();
        assert_eq!(err, GeometryError::UnsupportedType("LineString"));
    }

    #[test]
    fn rejects_bbox_and_foreign_members() {
        let mut with_bbox = square();
        with_bbox["bbox"] = json!([0.0, 0.0, 10.0, 10.0]);
        assert_eq!(parse(with_bbox).unwrap_err(), GeometryError::ExtraMembers);
        let mut foreign = square();
        foreign["colour"] = json!("red");
        assert_eq!(parse(foreign).unwrap_err(), GeometryError::ExtraMembers);
    }

    #[test]
    fn rejects_empty_geometries() {
        let err = parse(json!({"type": "Polygon", "coordinates": []})).unwrap_err();
        assert_eq!(err, GeometryError::Empty);
        let err = parse(json!({"type": "MultiPolygon", "coordinates": []})).unwrap_err();
        assert_eq!(err, GeometryError::Empty);
        let err = parse(json!({"type": "MultiPolygon", "coordinates": [[]]})).unwrap_err();
        assert_eq!(err, GeometryError::Empty);
    }

    #[test]
    fn rejects_unclosed_ring() {
        let err = parse(json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]]}))
            .unwrap_err();
        assert_eq!(err, GeometryError::RingNotClosed);
    }

    #[test]
    fn rejects_ring_with_fewer_than_four_positions() {
        let err = parse(
            json!({"type": "Polygon", "coordinates": [[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]]}),
        )
        .unwrap_err();
        assert_eq!(err, GeometryError::TooFewPositions);
    }

    fn polygon(rings: serde_json::Value) -> Result<Area, GeometryError> {
        parse(json!({"type": "Polygon", "coordinates": rings}))
    }

    #[test]
    fn rejects_self_intersecting_bowtie() {
        let err = polygon(json!([[
            [0.0, 0.0],
            [2.0, 2.0],
            [2.0, 0.0],
            [0.0, 2.0],
            [0.0, 0.0]
        ]]))
        .unwrap_err();
        assert_eq!(err, GeometryError::SelfIntersection);
    }

    #[test]
    fn rejects_ring_touching_itself_and_spikes() {
        // The shell passes through (1, 1) twice: a "figure eight" at a vertex.
        let err = polygon(json!([[
            [0.0, 0.0],
            [1.0, 1.0],
            [2.0, 0.0],
            [2.0, 2.0],
            [1.0, 1.0],
            [0.0, 2.0],
            [0.0, 0.0]
        ]]))
        .unwrap_err();
        assert_eq!(err, GeometryError::SelfIntersection);
        // A spike: the shell goes out to (5, 1) and straight back.
        let err = polygon(json!([[
            [0.0, 0.0],
            [2.0, 0.0],
            [2.0, 1.0],
            [5.0, 1.0],
            [2.0, 1.0],
            [2.0, 2.0],
            [0.0, 2.0],
            [0.0, 0.0]
        ]]))
        .unwrap_err();
        assert_eq!(err, GeometryError::SelfIntersection);
    }

    #[test]
    fn accepts_collinear_and_repeated_positions() {
        let area = polygon(json!([[
            [0.0, 0.0],
            [1.0, 0.0],
            [1.0, 0.0],
            [2.0, 0.0],
            [2.0, 2.0],
            [0.0, 2.0],
            [0.0, 0.0]
        ]]))
        .unwrap();
        assert!(area.covers(1.0, 1.0));
    }

    #[test]
    fn rejects_degenerate_rings() {
        // Four positions but only two distinct points.
        let err = polygon(json!([[[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]])).unwrap_err();
        assert_eq!(err, GeometryError::TooFewPositions);
        // Collinear shell: encloses nothing because it doubles back on itself.
        let err = polygon(json!([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.0]]])).unwrap_err();
        assert_eq!(err, GeometryError::SelfIntersection);
    }

    #[test]
    fn rejects_bad_holes() {
        let shell = json!([
            [0.0, 0.0],
            [10.0, 0.0],
            [10.0, 10.0],
            [0.0, 10.0],
            [0.0, 0.0]
        ]);
        let outside = json!([[20.0, 20.0], [21.0, 20.0], [21.0, 21.0], [20.0, 20.0]]);
        let crossing = json!([[5.0, 5.0], [15.0, 5.0], [15.0, 6.0], [5.0, 5.0]]);
        let touching = json!([[0.0, 5.0], [2.0, 4.0], [2.0, 6.0], [0.0, 5.0]]);
        let big = json!([[2.0, 2.0], [8.0, 2.0], [8.0, 8.0], [2.0, 8.0], [2.0, 2.0]]);
        let small = json!([[4.0, 4.0], [5.0, 4.0], [5.0, 5.0], [4.0, 4.0]]);
        assert_eq!(
            polygon(json!([shell, outside])).unwrap_err(),
            GeometryError::HoleOutsideShell
        );
        assert_eq!(
            polygon(json!([shell, crossing])).unwrap_err(),
            GeometryError::RingsTouch
        );
        assert_eq!(
            polygon(json!([shell, touching])).unwrap_err(),
            GeometryError::RingsTouch
        );
        assert_eq!(
            polygon(json!([shell, big, small])).unwrap_err(),
            GeometryError::NestedHoles
        );
        assert_eq!(
            polygon(json!([shell, small, big])).unwrap_err(),
            GeometryError::NestedHoles
        );
    }

    #[test]
    fn multipolygon_parts_must_not_overlap_but_may_nest_in_holes() {
        let err = parse(json!({"type": "MultiPolygon", "coordinates": [
            [[[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [0.0, 0.0]]],
            [[[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0], [1.0, 1.0]]]
        ]}))
        .unwrap_err();
        assert_eq!(err, GeometryError::RingsTouch);
        let err = parse(json!({"type": "MultiPolygon", "coordinates": [
            [[[0.0, 0.0], [9.0, 0.0], [9.0, 9.0], [0.0, 9.0], [0.0, 0.0]]],
            [[[1.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 1.0]]]
        ]}))
        .unwrap_err();
        assert_eq!(err, GeometryError::OverlappingPolygons);
        let island = parse(json!({"type": "MultiPolygon", "coordinates": [
            [[[0.0, 0.0], [9.0, 0.0], [9.0, 9.0], [0.0, 9.0], [0.0, 0.0]],
             [[2.0, 2.0], [7.0, 2.0], [7.0, 7.0], [2.0, 7.0], [2.0, 2.0]]],
            [[[3.0, 3.0], [4.0, 3.0], [4.0, 4.0], [3.0, 3.0]]]
        ]}))
        .unwrap();
        assert!(island.covers(3.9, 3.1), "on the island");
        assert!(!island.covers(6.0, 6.0), "in the lake");
        assert!(island.covers(1.0, 1.0), "on the shore");
    }

    #[test]
    fn rejects_out_of_range_and_malformed_positions() {
        for bad in [
            json!([[[181.0, 0.0], [1.0, 0.0], [1.0, 1.0], [181.0, 0.0]]]),
            json!([[[0.0, -90.5], [1.0, 0.0], [1.0, 1.0], [0.0, -90.5]]]),
        ] {
            let err = parse(json!({"type": "Polygon", "coordinates": bad})).unwrap_err();
            assert_eq!(err, GeometryError::OutOfRange);
        }
        let with_altitude = json!([[
            [0.0, 0.0, 5.0],
            [1.0, 0.0, 5.0],
            [1.0, 1.0, 5.0],
            [0.0, 0.0, 5.0]
        ]]);
        let err = parse(json!({"type": "Polygon", "coordinates": with_altitude})).unwrap_err();
        assert_eq!(err, GeometryError::BadPosition);
    }

    #[test]
    fn non_finite_coordinates_are_rejected() {
        // JSON cannot carry NaN, but a Geometry built in code can.
        let mut ring = vec![
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![1.0, 1.0],
            vec![0.0, 0.0],
        ];
        ring[1][0] = f64::NAN;
        let err = Area::parse(Geometry::new(Value::Polygon(vec![ring]))).unwrap_err();
        assert_eq!(err, GeometryError::OutOfRange);
        let mut ring = vec![
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![1.0, 1.0],
            vec![0.0, 0.0],
        ];
        ring[2][1] = f64::INFINITY;
        let err = Area::parse(Geometry::new(Value::Polygon(vec![ring]))).unwrap_err();
        assert_eq!(err, GeometryError::OutOfRange);
    }

    /// A convex polygon (a circle approximation) with `n` positions in total.
    fn circle(n: usize) -> Vec<Vec<f64>> {
        let mut ring: Vec<Vec<f64>> = (0..n - 1)
            .map(|i| {
                let t = i as f64 / (n - 1) as f64 * std::f64::consts::TAU;
                vec![10.0 * t.cos(), 10.0 * t.sin()]
            })
            .collect();
        ring.push(ring[0].clone());
        ring
    }

    #[test]
    fn vertex_cap_is_inclusive() {
        let at_cap = Geometry::new(Value::Polygon(vec![circle(MAX_VERTICES)]));
        assert!(Area::parse(at_cap).is_ok());
        let over_cap = Geometry::new(Value::Polygon(vec![circle(MAX_VERTICES + 1)]));
        assert_eq!(
            Area::parse(over_cap).unwrap_err(),
            GeometryError::TooManyVertices
        );
        let split = Geometry::new(Value::Polygon(vec![
            circle(MAX_VERTICES / 2),
            circle(MAX_VERTICES / 2 + 1),
        ]));
        assert_eq!(
            Area::parse(split).unwrap_err(),
            GeometryError::TooManyVertices
        );
    }

    /// Shapes chosen to be slow for the checks: a comb whose edges all overlap
    /// in x is refused as too complex once it has spent the work budget (it
    /// would otherwise take ~1.4 s of a core in a debug build); thousands of
    /// disjoint polygons are paired by their boxes and pass well within it.
    /// Counted steps, not time: the bound holds on any machine.
    #[test]
    fn work_per_area_is_bounded_by_the_budget() {
        let comb = |teeth: usize| {
            let mut comb = vec![vec![0.0, 0.0]];
            for t in 0..teeth {
                let y = t as f64 * 0.02;
                comb.extend([
                    vec![100.0, y],
                    vec![100.0, y + 0.01],
                    vec![1.0, y + 0.01],
                    vec![1.0, y + 0.02],
                ]);
            }
            comb.push(vec![0.0, teeth as f64 * 0.02]);
            comb.push(vec![0.0, 0.0]);
            Geometry::new(Value::Polygon(vec![comb]))
        };
        assert_eq!(
            Area::parse(comb((MAX_VERTICES - 2) / 4)).unwrap_err(),
            GeometryError::TooComplex
        );
        // A small comb is an odd but valid zone.
        assert!(Area::parse(comb(50)).is_ok());

        let squares: Vec<Vec<Vec<Vec<f64>>>> = (0..MAX_VERTICES / 5)
            .map(|i| {
                let (x, y) = ((i % 50) as f64, (i / 50) as f64);
                vec![vec![
                    vec![x, y],
                    vec![x + 0.5, y],
                    vec![x + 0.5, y + 0.5],
                    vec![x, y + 0.5],
                    vec![x, y],
                ]]
            })
            .collect();
        let mut budget = Budget(WORK_BUDGET);
        let shape = to_multi_polygon(&raw_polygons(&Value::MultiPolygon(squares.clone())).unwrap())
            .unwrap();
        check_edges(&shape, &mut budget).unwrap();
        check_ring_nesting(&shape, &mut budget).unwrap();
        let spent = WORK_BUDGET - budget.0;
        assert!(spent < WORK_BUDGET / 4, "spent {spent}");
        assert!(Area::parse(Geometry::new(Value::MultiPolygon(squares))).is_ok());
        // So is a round outline at the vertex cap.
        let mut budget = Budget(WORK_BUDGET);
        let round =
            to_multi_polygon(&raw_polygons(&Value::Polygon(vec![circle(MAX_VERTICES)])).unwrap())
                .unwrap();
        check_edges(&round, &mut budget).unwrap();
        assert!(WORK_BUDGET - budget.0 < WORK_BUDGET / 10);
    }

    #[test]
    fn stored_area_round_trips() {
        let area = parse(square()).unwrap();
        let json = serde_json::to_string(&area).unwrap();
        let again = Area::from_stored(serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(again, area);
    }
}
