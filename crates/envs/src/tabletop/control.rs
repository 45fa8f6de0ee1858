//! Helpers shared by the scripted experts: inverting the pusher's PD dynamics and moving around obstacles.

use super::geom::V2;
use super::{ACTION_SCALE, ARENA, DT, KP, KV, PUSHER_RADIUS, SUBSTEPS};

/// Response of the pusher over one control step to a target `T` from rest state `(x0, v0)`:
/// `x_end = x0 + b * v0 + c * (T - x0)` (per axis; the sub-steps are linear).
fn step_response() -> (f32, f32) {
    let sim = |x0: f32, v0: f32, t: f32| {
        let (mut x, mut v) = (x0, v0);
        for _ in 0..SUBSTEPS {
            v += (KP * (t - x) - KV * v) * DT;
            x += v * DT;
        }
        x
    };
    (sim(0.0, 1.0, 0.0), sim(0.0, 0.0, 1.0))
}

/// The action that brings the pusher (position `p`, velocity `v`, arena units) as close as possible to
/// `x_des` at the end of the step. Saturated actions keep their direction.
pub fn reach(p: V2, v: V2, x_des: V2) -> Vec<f32> {
    let (b, c) = step_response();
    let t = (x_des - p - v * b) / c;
    let mut a = t / ACTION_SCALE;
    let m = a.x.abs().max(a.y.abs());
    if m > 1.0 {
        a /= m;
    }
    vec![a.x, a.y]
}

/// Moves towards `goal` by at most `max_step` units this step.
pub fn move_toward(p: V2, v: V2, goal: V2, max_step: f32) -> Vec<f32> {
    reach(p, v, p + clamp_len(goal - p, max_step))
}

/// `d` shortened to at most `max` units.
pub fn clamp_len(d: V2, max: f32) -> V2 {
    let l = d.length();
    if l > max && l > 0.0 {
        d * (max / l)
    } else {
        d
    }
}

/// Clamps a point to where the pusher can go.
pub fn clamp_arena(p: V2) -> V2 {
    let lo = PUSHER_RADIUS;
    let hi = ARENA - PUSHER_RADIUS;
    V2::new(p.x.clamp(lo, hi), p.y.clamp(lo, hi))
}

/// Whether the circle arc around `c` of radius `r` from angle `from` through the signed angle `sweep` lies
/// where the pusher can go.
fn arc_inside(c: V2, r: f32, from: f32, sweep: f32) -> bool {
    let lo = PUSHER_RADIUS;
    let hi = ARENA - PUSHER_RADIUS;
    let n = (sweep.abs() / 0.1).ceil().max(1.0) as usize;
    (0..=n).all(|i| {
        let phi = from + sweep * i as f32 / n as f32;
        let q = c + V2::new(phi.cos(), phi.sin()) * r;
        (lo..=hi).contains(&q.x) && (lo..=hi).contains(&q.y)
    })
}

/// A waypoint towards `goal` that goes around an obstacle centred at `c`.
///
/// If `blocked(p, goal)` is false the goal itself is returned. Otherwise the pusher first moves out to
/// radius `r` from `c`, then orbits on that circle by `step` units per call, in direction `dir` (+1
/// increasing angle, -1 decreasing) or, with `dir = 0`, the shorter way unless that arc leaves the arena
/// and the other one does not.
pub fn around(
    p: V2,
    goal: V2,
    c: V2,
    r: f32,
    step: f32,
    dir: f32,
    blocked: impl Fn(V2, V2) -> bool,
) -> V2 {
    if !blocked(p, goal) {
        return goal;
    }
    let rp = p - c;
    let d = rp.length().max(1e-3);
    if d < 0.85 * r {
        return clamp_arena(c + rp * (r / d));
    }
    let phi_p = rp.y.atan2(rp.x);
    let rg = goal - c;
    let phi_g = rg.y.atan2(rg.x);
    let diff = super::geom::wrap_angle(phi_g - phi_p);
    let s = if dir != 0.0 {
        dir.signum()
    } else {
        let short = if diff >= 0.0 { 1.0 } else { -1.0 };
        let long_sweep = -short * (std::f32::consts::TAU - diff.abs());
        if !arc_inside(c, r, phi_p, diff) && arc_inside(c, r, phi_p, long_sweep) {
            -short
        } else {
            short
        }
    };
    let dphi = (step / r).min(diff.abs().max(0.05));
    let phi = phi_p + s * dphi;
    clamp_arena(c + V2::new(phi.cos(), phi.sin()) * r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reach_is_exact_without_saturation() {
        let (b, c) = step_response();
        assert!(c > 0.2 && c < 0.4, "c = {c}");
        let p = V2::new(100.0, 100.0);
        let v = V2::new(10.0, -5.0);
        let a = reach(p, v, V2::new(103.0, 101.0));
        let t = p + V2::new(a[0], a[1]) * ACTION_SCALE;
        let x = p + v * b + (t - p) * c;
        assert!((x - V2::new(103.0, 101.0)).length() < 1e-3);
    }
}
