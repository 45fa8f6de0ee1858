//! `turn-lever`: turn a red lever about its hinge until it lies on the pink target lever.
//!
//! * **Physics:** a 184 x 26 bar of mass 1 on an ideal hinge (its centre of mass at the hinge, translations
//!   locked, so it can only turn about the hinge); the hinge is 14 units from the back end, so the lever reaches 170 units in front of it. The lever has inertia and
//!   angular damping 4/s: it keeps turning after a push (two thirds of its speed are left after one
//!   control step). It cannot reach the walls.
//! * **Object pose** in the state: the hinge position and the lever angle. **Goal pose:** the hinge position
//!   and the target angle.
//! * **Reset ranges:** hinge uniform in `[190, 322]²`, angle uniform in `[-pi, pi)`, target angle = angle
//!   ± (uniform in [70°, 140°]) with a random sign; pusher uniform in `[30, 482]²` at least 4 units from the
//!   lever.
//! * **Success:** lever angle within 20° of the target angle (the tip is then within about 3.6 pixels
//!   of the target's at 32x32).
//! * **Reward:** 1 on success, else `0.8 * (0.1 * reach + 0.9 * turn)` with
//!   `reach = 1 - min(|pusher - lever point 100 from the hinge| / 300, 1)` and `turn = 1 - |angle error| / pi`.
//! * **Episode length:** 50 steps.
//! * **Expert:** goes around the hinge (never across the lever) to the side of the lever that turns it
//!   towards the target (round the back of the hinge or over the tip, whichever is shorter), pushes 95 units out from the hinge along the circle, and slows down as the
//!   predicted resting angle (angle + angular velocity / damping) nears the target.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rapier2d::prelude::*;

use super::canvas::Canvas;
use super::control::{around, move_toward, reach};
use super::geom::{rot, segment_poly_dist, transform, wrap_angle, V2};
use super::{sample_pusher, to_sim, Eval, Scene, Task, TaskDef, PUSHER_RADIUS, SIM};
use crate::{Controller, Obs};

/// Reach of the lever in front of the hinge.
pub const LENGTH: f32 = 170.0;
/// Length of the lever behind the hinge.
pub const BACK: f32 = 14.0;
/// Half thickness of the lever.
pub const HALF_WIDTH: f32 = 13.0;
/// Angular damping (1/s).
pub const DAMPING: f32 = 4.0;
/// Success tolerance on the angle (radians, 20°).
pub const TOLERANCE: f32 = 20.0 * std::f32::consts::PI / 180.0;
/// The expert stops pushing when the predicted resting angle is this close to the target (3°).
const EXPERT_PRECISION: f32 = 3.0 * std::f32::consts::PI / 180.0;
/// Distance from the hinge where the expert pushes.
const PUSH_RADIUS: f32 = 95.0;
/// Point of the lever used by the reach term of the reward (distance from the hinge).
const GRIP: f32 = 100.0;

const LEVER_COLOR: [u8; 3] = [185, 35, 45];
const TARGET_COLOR: [u8; 3] = [246, 182, 190];
const HINGE_COLOR: [u8; 3] = [40, 40, 40];

/// Corners of the lever with hinge `h` and angle `th`.
pub fn lever_corners(h: V2, th: f32) -> [V2; 4] {
    let local = [
        V2::new(-BACK, -HALF_WIDTH),
        V2::new(LENGTH, -HALF_WIDTH),
        V2::new(LENGTH, HALF_WIDTH),
        V2::new(-BACK, HALF_WIDTH),
    ];
    transform(&local, h.x, h.y, th)
}

/// Episode state of `turn-lever`.
pub struct TurnLever {
    lever: RigidBodyHandle,
    hinge: V2,
    target: f32,
}

impl Task for TurnLever {
    const DEF: TaskDef = TaskDef {
        name: "turn-lever",
        description:
            "turn the red lever about its hinge onto the pink target lever (within 20 degrees)",
        max_steps: 50,
    };

    fn build(rng: &mut ChaCha8Rng) -> (Scene, Self) {
        let pi = std::f32::consts::PI;
        let hinge = V2::new(rng.gen_range(190.0..322.0), rng.gen_range(190.0..322.0));
        let th = rng.gen_range(-pi..pi);
        let delta = rng.gen_range(70.0f32..140.0).to_radians();
        let sign = if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
        let target = wrap_angle(th + sign * delta);
        let corners = lever_corners(hinge, th);
        let pusher = sample_pusher(rng, 30.0, 482.0, PUSHER_RADIUS + 4.0, &[&corners]);
        let mut scene = Scene::new(pusher);
        let w = &mut scene.world;
        // An ideal hinge: the body's centre of mass is put at the hinge and its translations are locked, so it
        // can only turn about the hinge. (rapier's impulse revolute joint let the hinge drift by ~10 units
        // under the kinematic pusher.) Mass 1, moment of inertia of the bar about the hinge.
        let (x0, x1, h) = (-BACK, LENGTH, HALF_WIDTH);
        let inertia = ((x0 * x0 + x0 * x1 + x1 * x1) + h * h) / 3.0;
        let lever = w.bodies.insert(
            RigidBodyBuilder::dynamic()
                .translation(to_sim(hinge))
                .rotation(th)
                .angular_damping(DAMPING)
                .lock_translations()
                .additional_mass_properties(MassProperties::new(
                    Vector::ZERO,
                    1.0,
                    inertia * SIM * SIM,
                ))
                .can_sleep(false),
        );
        w.colliders.insert_with_parent(
            ColliderBuilder::cuboid(0.5 * (LENGTH + BACK) * SIM, HALF_WIDTH * SIM)
                .translation(to_sim(V2::new(0.5 * (LENGTH - BACK), 0.0)))
                .density(0.0)
                .friction(0.0),
            lever,
            &mut w.bodies,
        );
        (
            scene,
            Self {
                lever,
                hinge,
                target,
            },
        )
    }

    fn object(&self) -> RigidBodyHandle {
        self.lever
    }

    fn goal_pose(&self) -> [f32; 3] {
        [self.hinge.x, self.hinge.y, self.target]
    }

    fn evaluate(&self, scene: &Scene) -> Eval {
        let th = self.object_pose(scene)[2];
        let err = wrap_angle(self.target - th).abs();
        let grip = self.hinge + rot(V2::new(GRIP, 0.0), th);
        let reach = 1.0 - ((scene.pusher_pos() - grip).length() / 300.0).min(1.0);
        let turn = 1.0 - err / std::f32::consts::PI;
        Eval::from_progress(0.1 * reach + 0.9 * turn, err < TOLERANCE)
    }

    fn draw_static(&self, c: &mut Canvas) {
        c.fill_poly(&lever_corners(self.hinge, self.target), TARGET_COLOR);
    }

    fn draw_dynamic(&self, scene: &Scene, c: &mut Canvas) {
        let th = self.object_pose(scene)[2];
        c.fill_poly(&lever_corners(self.hinge, th), LEVER_COLOR);
        c.fill_circle(self.hinge, 10.0, HINGE_COLOR);
    }
}

/// Scripted expert for `turn-lever` (reads the privileged state).
#[derive(Default)]
pub struct TurnLeverExpert {
    pushing: bool,
}

impl Controller for TurnLeverExpert {
    fn reset(&mut self, _seed: u64) {
        self.pushing = false;
    }

    fn act(&mut self, obs: &Obs) -> Vec<f32> {
        let s = &obs.state;
        if s.len() < super::STATE_DIM {
            return vec![0.0, 0.0];
        }
        let p = V2::new(s[0], s[1]);
        let v = V2::new(s[2], s[3]);
        let hinge = V2::new(s[4], s[5]);
        let th = s[6];
        let w = s[9];
        let target = s[12];
        let rest = th + w / DAMPING;
        let e = wrap_angle(target - rest);
        // the expert aims well inside the success tolerance (3°, as precise as with the former 10° one),
        // so that its demonstrations do not get sloppier when the tolerance is looser
        if e.abs() < EXPERT_PRECISION && wrap_angle(target - th).abs() < 10f32.to_radians() {
            self.pushing = false;
            return reach(p, v, p);
        }
        let sgn = e.signum();
        // Rotating by +angle moves lever points along +n.
        let u = rot(V2::new(1.0, 0.0), th);
        let n = rot(V2::new(0.0, 1.0), th);
        let contact = hinge + u * PUSH_RADIUS - n * (sgn * (HALF_WIDTH + PUSHER_RADIUS));
        let pre = hinge + u * PUSH_RADIUS - n * (sgn * (HALF_WIDTH + PUSHER_RADIUS + 10.0));
        if (p - pre).length() < 6.0 || (self.pushing && (p - contact).length() < 16.0) {
            self.pushing = true;
            let step = (0.6 * e.abs() * PUSH_RADIUS).min(22.0);
            return reach(p, v, contact + n * (sgn * step));
        }
        self.pushing = false;
        let corners = lever_corners(hinge, th);
        let blocked = |a: V2, b: V2| {
            let ab = b - a;
            let l = ab.length();
            if l < 1e-3 {
                return false;
            }
            let a2 = a + ab * (4.0f32.min(l) / l);
            segment_poly_dist(a2, b, &corners) < PUSHER_RADIUS + 2.0
        };
        // Orbit the hinge without crossing the lever: round the back of the hinge, or over the tip when that
        // is shorter and the tip's circle stays in the arena.
        let rp = p - hinge;
        let rho = rp.length();
        let tip_clear = LENGTH + PUSHER_RADIUS + 14.0;
        let tip = hinge + u * tip_clear;
        let lo = PUSHER_RADIUS + 4.0;
        let hi = super::ARENA - PUSHER_RADIUS - 4.0;
        let tip_inside = (lo..hi).contains(&tip.x) && (lo..hi).contains(&tip.y);
        let alpha_p = wrap_angle(rp.y.atan2(rp.x) - th);
        let rq = pre - hinge;
        let alpha_q = wrap_angle(rq.y.atan2(rq.x) - th);
        let pi = std::f32::consts::PI;
        // Arc from alpha_p to alpha_q that avoids angle 0 (the lever) and the one that crosses it.
        let (back_dir, back_arc, tip_dir, tip_arc) = if alpha_p.signum() == alpha_q.signum() {
            let d = alpha_q - alpha_p;
            (d.signum(), d.abs(), -d.signum(), 2.0 * pi - d.abs())
        } else {
            let over_zero = (alpha_q - alpha_p).abs();
            (
                alpha_p.signum(),
                2.0 * pi - over_zero,
                -alpha_p.signum(),
                over_zero,
            )
        };
        let r_back = rho.clamp(PUSH_RADIUS + 20.0, tip_clear);
        let back_len = back_arc * r_back + (rho - r_back).abs();
        let r_tip = rho.clamp(tip_clear, tip_clear + 20.0);
        let tip_len = tip_arc * r_tip + (rho - r_tip).abs() + (r_tip - rq.length());
        let (dir, r) = if tip_inside && tip_len < back_len {
            (tip_dir, r_tip)
        } else {
            (back_dir, r_back)
        };
        let wp = around(p, pre, hinge, r, 28.0, dir, blocked);
        move_toward(p, v, wp, 28.0)
    }
}
