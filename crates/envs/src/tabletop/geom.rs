//! Small 2-D geometry helpers in arena units (polygons, exact convex clipping, distances).

pub use rapier2d::math::Vector as V2;

/// Wraps an angle to `(-pi, pi]`.
pub fn wrap_angle(a: f32) -> f32 {
    let t = std::f32::consts::TAU;
    let mut a = a.rem_euclid(t);
    if a > std::f32::consts::PI {
        a -= t;
    }
    a
}

/// Rotates `p` by `th` radians (x towards y).
pub fn rot(p: V2, th: f32) -> V2 {
    let (s, c) = th.sin_cos();
    V2::new(c * p.x - s * p.y, s * p.x + c * p.y)
}

/// Maps local points through the pose `(x, y, th)`.
pub fn transform<const N: usize>(pts: &[V2; N], x: f32, y: f32, th: f32) -> [V2; N] {
    let o = V2::new(x, y);
    let mut out = [V2::ZERO; N];
    for (d, p) in out.iter_mut().zip(pts) {
        *d = o + rot(*p, th);
    }
    out
}

/// Signed area (positive when counter-clockwise in a y-up frame).
pub fn signed_area(p: &[V2]) -> f32 {
    if p.len() < 3 {
        return 0.0;
    }
    let mut a = 0.0;
    for i in 0..p.len() {
        let q = p[(i + 1) % p.len()];
        a += p[i].perp_dot(q);
    }
    0.5 * a
}

/// Area of a simple polygon.
pub fn area(p: &[V2]) -> f32 {
    signed_area(p).abs()
}

/// Sutherland-Hodgman: `subject` clipped by the convex polygon `clipper` (either orientation).
/// Exact for a convex clipper; the result is the intersection polygon (possibly empty).
pub fn clip_convex(subject: &[V2], clipper: &[V2]) -> Vec<V2> {
    let orient = if signed_area(clipper) >= 0.0 {
        1.0
    } else {
        -1.0
    };
    let mut out: Vec<V2> = subject.to_vec();
    let mut inp: Vec<V2> = Vec::with_capacity(subject.len() + clipper.len());
    for i in 0..clipper.len() {
        if out.is_empty() {
            break;
        }
        let a = clipper[i];
        let b = clipper[(i + 1) % clipper.len()];
        let e = b - a;
        let side = |p: V2| orient * e.perp_dot(p - a);
        std::mem::swap(&mut inp, &mut out);
        out.clear();
        for j in 0..inp.len() {
            let p = inp[j];
            let q = inp[(j + 1) % inp.len()];
            let (sp, sq) = (side(p), side(q));
            if sp >= 0.0 {
                out.push(p);
            }
            if (sp >= 0.0) != (sq >= 0.0) {
                let t = sp / (sp - sq);
                out.push(p + (q - p) * t);
            }
        }
    }
    out
}

/// Area of the intersection of two convex polygons.
pub fn intersection_area(a: &[V2], b: &[V2]) -> f32 {
    area(&clip_convex(a, b))
}

/// Distance from `p` to the segment `a`-`b`.
pub fn point_segment_dist(p: V2, a: V2, b: V2) -> f32 {
    let ab = b - a;
    let l2 = ab.length_squared();
    let t = if l2 > 0.0 {
        ((p - a).dot(ab) / l2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (a + ab * t - p).length()
}

/// Whether two segments cross.
fn segments_cross(a: V2, b: V2, c: V2, d: V2) -> bool {
    let d1 = (b - a).perp_dot(c - a);
    let d2 = (b - a).perp_dot(d - a);
    let d3 = (d - c).perp_dot(a - c);
    let d4 = (d - c).perp_dot(b - c);
    (d1 > 0.0) != (d2 > 0.0) && (d3 > 0.0) != (d4 > 0.0)
}

/// Distance between segments `a`-`b` and `c`-`d` (0 when they cross).
pub fn segment_segment_dist(a: V2, b: V2, c: V2, d: V2) -> f32 {
    if segments_cross(a, b, c, d) {
        return 0.0;
    }
    point_segment_dist(a, c, d)
        .min(point_segment_dist(b, c, d))
        .min(point_segment_dist(c, a, b))
        .min(point_segment_dist(d, a, b))
}

/// Whether `p` is inside the convex polygon `poly` (either orientation).
pub fn inside_convex(p: V2, poly: &[V2]) -> bool {
    let orient = if signed_area(poly) >= 0.0 { 1.0 } else { -1.0 };
    (0..poly.len()).all(|i| {
        let a = poly[i];
        let b = poly[(i + 1) % poly.len()];
        orient * (b - a).perp_dot(p - a) >= 0.0
    })
}

/// Distance from `p` to the convex polygon (0 inside).
pub fn point_poly_dist(p: V2, poly: &[V2]) -> f32 {
    if inside_convex(p, poly) {
        return 0.0;
    }
    (0..poly.len())
        .map(|i| point_segment_dist(p, poly[i], poly[(i + 1) % poly.len()]))
        .fold(f32::INFINITY, f32::min)
}

/// Distance from the segment `a`-`b` to the convex polygon (0 when they touch).
pub fn segment_poly_dist(a: V2, b: V2, poly: &[V2]) -> f32 {
    if inside_convex(a, poly) || inside_convex(b, poly) {
        return 0.0;
    }
    (0..poly.len())
        .map(|i| segment_segment_dist(a, b, poly[i], poly[(i + 1) % poly.len()]))
        .fold(f32::INFINITY, f32::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_of_offset_squares() {
        let sq = |x: f32, y: f32| {
            [
                V2::new(x, y),
                V2::new(x + 2.0, y),
                V2::new(x + 2.0, y + 2.0),
                V2::new(x, y + 2.0),
            ]
        };
        assert!((intersection_area(&sq(0.0, 0.0), &sq(1.0, 1.0)) - 1.0).abs() < 1e-5);
        assert!((intersection_area(&sq(0.0, 0.0), &sq(0.0, 0.0)) - 4.0).abs() < 1e-5);
        assert_eq!(intersection_area(&sq(0.0, 0.0), &sq(5.0, 0.0)), 0.0);
    }

    #[test]
    fn wrap() {
        assert!((wrap_angle(3.0 * std::f32::consts::PI) - std::f32::consts::PI).abs() < 1e-5);
        assert!((wrap_angle(-0.5) + 0.5).abs() < 1e-6);
    }
}
