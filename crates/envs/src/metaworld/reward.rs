//! Reward shaping primitives of Meta-World v3 (`metaworld/utils/reward_utils.py`), as used by the dense
//! ("v2") rewards of the tasks: the `long_tail` tolerance, the Hamacher product, and the gripper caging term
//! shared by the grasping tasks.

use super::sim::{norm3, sub3, Sim, Vec3};

/// `tolerance(x, bounds=(lower, upper), margin, sigmoid="long_tail", value_at_margin=0.1)`: 1 inside
/// `[lower, upper]`, decaying as `1 / ((d * s)^2 + 1)` outside, where `d` is the distance to the nearest bound
/// divided by `margin` and `s = sqrt(1 / 0.1 - 1)`, so the value is 0.1 at `margin` from the bounds.
/// A zero margin gives 0 outside the bounds. (A negative margin, an error in Python, is treated as zero.)
pub fn tolerance(x: f64, lower: f64, upper: f64, margin: f64) -> f64 {
    let in_bounds = lower <= x && x <= upper;
    if in_bounds {
        return 1.0;
    }
    if margin <= 0.0 || margin.is_nan() {
        return 0.0;
    }
    let d = if x < lower { lower - x } else { x - upper } / margin;
    let scale = (1.0f64 / 0.1 - 1.0).sqrt();
    1.0 / ((d * scale).powi(2) + 1.0)
}

/// Hamacher product `a * b / (a + b - a * b)` (0 when the denominator is 0), a fuzzy "and" of two values in [0, 1].
pub fn hamacher_product(a: f64, b: f64) -> f64 {
    let den = a + b - a * b;
    if den > 0.0 {
        a * b / den
    } else {
        0.0
    }
}

/// Which variant of the caging reward's density term is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CagingDensity {
    /// `(caging_and_gripping + caging) / 2`
    High,
    /// `(caging_and_gripping + reach) / 2`
    Medium,
}

/// Parameters of [`gripper_caging`] (the keyword arguments of `SawyerXYZEnv._gripper_caging_reward`).
#[derive(Clone, Copy, Debug)]
pub struct Caging {
    pub obj_radius: f64,
    pub pad_success_thresh: f64,
    pub object_reach_radius: f64,
    pub xz_thresh: f64,
    pub desired_gripper_effort: f64,
    pub density: CagingDensity,
}

/// The base caging reward: both finger pads around the object along y, the tool centre near it in x-z, the
/// gripper closing once caged; combined with Hamacher products, plus the density term.
pub fn gripper_caging(
    sim: &Sim,
    p: &Caging,
    grip_action: f32,
    obj: Vec3,
    obj_init: Vec3,
    init_tcp: Vec3,
) -> f64 {
    let left = sim.xpos(sim.ids.leftpad);
    let right = sim.xpos(sim.ids.rightpad);
    let pads_y = [left[1], right[1]];
    let mut caging_lr = [0.0; 2];
    for (i, pad_y) in pads_y.iter().enumerate() {
        let pad_to_obj = (pad_y - obj[1]).abs();
        let pad_to_objinit = (pad_y - obj_init[1]).abs();
        let margin = (pad_to_objinit - p.pad_success_thresh).abs();
        caging_lr[i] = tolerance(pad_to_obj, p.obj_radius, p.pad_success_thresh, margin);
    }
    let caging_y = hamacher_product(caging_lr[0], caging_lr[1]);

    let tcp = sim.tcp_center();
    let xz = |v: Vec3, w: Vec3| ((v[0] - w[0]).powi(2) + (v[2] - w[2]).powi(2)).sqrt();
    let caging_xz_margin = xz(obj_init, init_tcp) - p.xz_thresh;
    let caging_xz = tolerance(xz(tcp, obj), 0.0, p.xz_thresh, caging_xz_margin);

    let effort = p.desired_gripper_effort;
    let gripper_closed = (grip_action as f64).max(0.0).min(effort) / effort;

    let caging = hamacher_product(caging_y, caging_xz);
    let gripping = if caging > 0.97 { gripper_closed } else { 0.0 };
    let caging_and_gripping = hamacher_product(caging, gripping);
    match p.density {
        CagingDensity::High => (caging_and_gripping + caging) / 2.0,
        CagingDensity::Medium => {
            let tcp_to_obj = norm3(sub3(obj, tcp));
            let tcp_to_obj_init = norm3(sub3(obj_init, init_tcp));
            let reach_margin = (tcp_to_obj_init - p.object_reach_radius).abs();
            let reach = tolerance(tcp_to_obj, 0.0, p.object_reach_radius, reach_margin);
            (caging_and_gripping + reach) / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_matches_reference_points() {
        assert_eq!(tolerance(0.01, 0.0, 0.02, 0.1), 1.0);
        // at `margin` outside the bounds the value is 0.1
        assert!((tolerance(0.12, 0.0, 0.02, 0.1) - 0.1).abs() < 1e-12);
        assert!((tolerance(-0.1, 0.0, 0.02, 0.1) - 0.1).abs() < 1e-12);
        assert_eq!(tolerance(0.5, 0.0, 0.02, 0.0), 0.0);
    }

    #[test]
    fn hamacher_product_limits() {
        assert_eq!(hamacher_product(0.0, 0.0), 0.0);
        assert_eq!(hamacher_product(1.0, 0.3), 0.3);
        assert!((hamacher_product(0.5, 0.5) - 1.0 / 3.0).abs() < 1e-12);
    }
}
