//! `slide-handle`: slide a purple handle along its grey rail onto the lavender target mark.
//!
//! * **Physics:** a 76 x 40 handle of mass 1 on an ideal prismatic joint along a 340-unit rail (rotations
//!   locked, position projected onto the rail after every physics sub-step), travel limited to ±130 units
//!   from the rail centre. Like a stiff drawer it stops as soon as it is
//!   no longer pushed (velocity zeroed before every physics sub-step). Pushing across the rail does nothing
//!   useful: only the handle's two short ends move it.
//! * **Object pose** in the state: the handle centre and the rail angle. **Goal pose:** the target centre
//!   on the rail and the rail angle.
//! * **Reset ranges:** rail centre uniform in `[196, 316]²`, rail angle uniform in `[0, pi)`; handle and
//!   target offsets along the rail uniform in `[-100, 100]`, at least 70 apart; pusher uniform in
//!   `[30, 482]²` at least 4 units from the handle.
//! * **Success:** handle centre within 32 units of the target along the rail (two pixels of a 32x32
//!   frame, so that success is visible to a classifier at the world model's resolution).
//! * **Reward:** 1 on success, else `0.8 * (0.1 * reach + 0.9 * slide)` with
//!   `reach = 1 - min(max(0, |pusher - handle| - 58) / 300, 1)` and `slide = 1 - min(|offset error| / 200, 1)`.
//! * **Episode length:** 50 steps.
//! * **Expert:** walks around the handle to the end facing away from the target and pushes along the rail,
//!   slowing down near the target.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rapier2d::prelude::*;

use super::canvas::Canvas;
use super::control::{around, move_toward, reach};
use super::geom::{point_poly_dist, rot, segment_poly_dist, transform, V2};
use super::{sample_pusher, to_sim, Eval, Scene, Task, TaskDef, PUSHER_RADIUS, SIM};
use crate::{Controller, Obs};

/// Half length of the handle along the rail.
pub const HALF_LEN: f32 = 38.0;
/// Half width of the handle across the rail.
pub const HALF_WID: f32 = 20.0;
/// Half length of the drawn rail.
pub const RAIL_HALF: f32 = 170.0;
/// Travel limit of the handle centre from the rail centre.
pub const LIMIT: f32 = 130.0;
/// Success tolerance along the rail (2 px at 32x32).
pub const TOLERANCE: f32 = 32.0;

/// The expert stops pushing this close to the target.
const EXPERT_PRECISION: f32 = 4.0;

const HANDLE_COLOR: [u8; 3] = [125, 65, 180];
const TARGET_COLOR: [u8; 3] = [214, 196, 242];
const RAIL_COLOR: [u8; 3] = [165, 165, 165];

/// Corners of the handle centred at `c` on a rail of angle `th`.
pub fn handle_corners(c: V2, th: f32) -> [V2; 4] {
    let local = [
        V2::new(-HALF_LEN, -HALF_WID),
        V2::new(HALF_LEN, -HALF_WID),
        V2::new(HALF_LEN, HALF_WID),
        V2::new(-HALF_LEN, HALF_WID),
    ];
    transform(&local, c.x, c.y, th)
}

/// Episode state of `slide-handle`.
pub struct SlideHandle {
    handle: RigidBodyHandle,
    rail: V2,
    angle: f32,
    target: f32,
}

impl SlideHandle {
    fn axis(&self) -> V2 {
        rot(V2::new(1.0, 0.0), self.angle)
    }

    /// Offset of the handle centre along the rail.
    pub fn offset(&self, scene: &Scene) -> f32 {
        let (c, _) = scene.pose(self.handle);
        (c - self.rail).dot(self.axis())
    }
}

impl Task for SlideHandle {
    const DEF: TaskDef = TaskDef {
        name: "slide-handle",
        description:
            "slide the purple handle along its rail onto the lavender mark (within 32 units)",
        max_steps: 50,
    };

    fn build(rng: &mut ChaCha8Rng) -> (Scene, Self) {
        let rail = V2::new(rng.gen_range(196.0..316.0), rng.gen_range(196.0..316.0));
        let angle = rng.gen_range(0.0..std::f32::consts::PI);
        let (s0, target) = loop {
            let s0: f32 = rng.gen_range(-100.0..100.0);
            let t: f32 = rng.gen_range(-100.0..100.0);
            if (t - s0).abs() >= 70.0 {
                break (s0, t);
            }
        };
        let u = rot(V2::new(1.0, 0.0), angle);
        let c = rail + u * s0;
        let corners = handle_corners(c, angle);
        let pusher = sample_pusher(rng, 30.0, 482.0, PUSHER_RADIUS + 4.0, &[&corners]);
        let mut scene = Scene::new(pusher);
        let w = &mut scene.world;
        // The prismatic constraint is enforced exactly: rotations are locked and after every physics sub-step
        // the handle is projected back onto the rail within the travel limits (rapier's impulse prismatic
        // joint let it drift by several units and turn by ~10 degrees under the kinematic pusher).
        let handle = w.bodies.insert(
            RigidBodyBuilder::dynamic()
                .translation(to_sim(c))
                .rotation(angle)
                .lock_rotations()
                .can_sleep(false),
        );
        let area = 4.0 * HALF_LEN * HALF_WID * SIM * SIM;
        w.colliders.insert_with_parent(
            ColliderBuilder::cuboid(HALF_LEN * SIM, HALF_WID * SIM)
                .density(1.0 / area)
                .friction(0.0),
            handle,
            &mut w.bodies,
        );
        (
            scene,
            Self {
                handle,
                rail,
                angle,
                target,
            },
        )
    }

    fn before_substep(&self, scene: &mut Scene) {
        scene.freeze(self.handle);
    }

    fn after_substep(&self, scene: &mut Scene) {
        let s = self.offset(scene).clamp(-LIMIT, LIMIT);
        let on_rail = self.rail + self.axis() * s;
        let b = &mut scene.world.bodies[self.handle];
        b.set_translation(to_sim(on_rail), false);
        let v = b.linvel();
        let u = self.axis();
        b.set_linvel(u * v.dot(u), false);
    }

    fn at_rest_and_clear(&self, scene: &Scene, p: V2, margin: f32) -> bool {
        let (c, _) = scene.pose(self.handle);
        point_poly_dist(p, &handle_corners(c, self.angle)) > margin
    }

    fn object(&self) -> RigidBodyHandle {
        self.handle
    }

    fn goal_pose(&self) -> [f32; 3] {
        let g = self.rail + self.axis() * self.target;
        [g.x, g.y, self.angle]
    }

    fn evaluate(&self, scene: &Scene) -> Eval {
        let s = self.offset(scene);
        let (c, _) = scene.pose(self.handle);
        let reach = 1.0
            - (((scene.pusher_pos() - c).length() - (HALF_LEN + PUSHER_RADIUS)).max(0.0) / 300.0)
                .min(1.0);
        let err = (s - self.target).abs();
        let slide = 1.0 - (err / 200.0).min(1.0);
        Eval::from_progress(0.1 * reach + 0.9 * slide, err < TOLERANCE)
    }

    fn draw_static(&self, c: &mut Canvas) {
        let u = self.axis();
        let a = self.rail - u * RAIL_HALF;
        let b = self.rail + u * RAIL_HALF;
        c.line(a, b, 12.0, RAIL_COLOR);
        let n = rot(V2::new(0.0, 1.0), self.angle);
        for e in [a, b] {
            c.line(e - n * 16.0, e + n * 16.0, 6.0, RAIL_COLOR);
        }
        c.fill_poly(
            &handle_corners(self.rail + u * self.target, self.angle),
            TARGET_COLOR,
        );
    }

    fn draw_dynamic(&self, scene: &Scene, c: &mut Canvas) {
        let (p, _) = scene.pose(self.handle);
        c.fill_poly(&handle_corners(p, self.angle), HANDLE_COLOR);
    }
}

/// Scripted expert for `slide-handle` (reads the privileged state).
#[derive(Default)]
pub struct SlideHandleExpert {
    pushing: bool,
}

impl Controller for SlideHandleExpert {
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
        let c = V2::new(s[4], s[5]);
        let angle = s[12];
        let g = V2::new(s[10], s[11]);
        let u = rot(V2::new(1.0, 0.0), angle);
        let e = (g - c).dot(u);
        // well inside the tolerance, whatever it is: demonstrations stay precise
        if e.abs() < EXPERT_PRECISION {
            self.pushing = false;
            return reach(p, v, p);
        }
        let sgn = e.signum();
        let contact = c - u * (sgn * (HALF_LEN + PUSHER_RADIUS));
        let pre = c - u * (sgn * (HALF_LEN + PUSHER_RADIUS + 10.0));
        if (p - pre).length() < 6.0 || (self.pushing && (p - contact).length() < 16.0) {
            self.pushing = true;
            let step = (0.8 * e.abs()).min(22.0);
            return reach(p, v, contact + u * (sgn * step));
        }
        self.pushing = false;
        let corners = handle_corners(c, angle);
        let blocked = |a: V2, b: V2| {
            let ab = b - a;
            let l = ab.length();
            if l < 1e-3 {
                return false;
            }
            let a2 = a + ab * (4.0f32.min(l) / l);
            segment_poly_dist(a2, b, &corners) < PUSHER_RADIUS + 2.0
        };
        let r = (HALF_LEN * HALF_LEN + HALF_WID * HALF_WID).sqrt() + PUSHER_RADIUS + 12.0;
        let wp = around(p, pre, c, r, 28.0, 0.0, blocked);
        move_toward(p, v, wp, 28.0)
    }
}
