//! `push-block`: push a sliding orange block completely into a yellow goal square.
//!
//! * **Physics:** a 68 x 68 block of mass 1, pusher-block friction 0.5. Unlike the T, the block keeps
//!   sliding after a push: its velocity decays with linear and angular damping 6/s (56 % left after one
//!   control step), so a push at full speed carries it ~30 units further. It collides with the walls.
//! * **Object pose** in the state: the block centre and angle. **Goal pose:** the goal square's centre, angle 0.
//! * **Reset ranges:** block centre uniform in `[120, 392]²`, angle uniform in `[-pi/4, pi/4)`; goal centre
//!   uniform in `[110, 402]²` at least 150 units from the block; pusher uniform in `[40, 472]²` at least 4
//!   units from the block.
//! * **Success:** all four corners of the block inside the 144 x 144 goal square (axis-aligned). Depending on
//!   the block's angle this leaves 24 to 38 units of play for the centre (1.5 to 2.4 pixels of a 32x32
//!   frame: a margin the world model's frames can show).
//! * **Reward:** 1 on success, else `0.8 * (0.1 * reach + 0.9 * place)` with
//!   `reach = 1 - min(max(0, |pusher - block| - 54) / 300, 1)` and `place = 1 - min(|block - goal| / 300, 1)`.
//! * **Episode length:** 50 steps.
//! * **Expert:** predicts where the sliding block will stop, walks around the block to the point behind it
//!   on the line to the goal and pushes along that line, slowing down as the predicted stop nears the goal.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rapier2d::prelude::*;

use super::canvas::Canvas;
use super::control::{around, move_toward, reach};
use super::geom::{rot, segment_poly_dist, transform, V2};
use super::{sample_pusher, to_sim, Eval, Scene, Task, TaskDef, PUSHER_RADIUS, SIM};
use crate::{Controller, Obs};

/// Half side of the block.
pub const HALF: f32 = 34.0;
/// Half side of the goal square.
pub const ZONE_HALF: f32 = 72.0;
/// Linear and angular damping of the block (1/s).
pub const DAMPING: f32 = 6.0;

const BLOCK_COLOR: [u8; 3] = [235, 120, 30];
const ZONE_COLOR: [u8; 3] = [250, 226, 130];
const ZONE_EDGE: [u8; 3] = [205, 165, 40];

const SQUARE: [V2; 4] = [
    V2::new(-1.0, -1.0),
    V2::new(1.0, -1.0),
    V2::new(1.0, 1.0),
    V2::new(-1.0, 1.0),
];

/// Corners of the block at `(x, y, th)`.
pub fn block_corners(x: f32, y: f32, th: f32) -> [V2; 4] {
    transform(&SQUARE.map(|p| p * HALF), x, y, th)
}

/// Corners of the goal square centred at `g`.
pub fn zone_corners(g: V2) -> [V2; 4] {
    transform(&SQUARE.map(|p| p * ZONE_HALF), g.x, g.y, 0.0)
}

/// Whether the block at `pose` lies completely in the goal square centred at `g`.
pub fn inside(pose: [f32; 3], g: V2) -> bool {
    block_corners(pose[0], pose[1], pose[2])
        .iter()
        .all(|c| (c.x - g.x).abs() <= ZONE_HALF && (c.y - g.y).abs() <= ZONE_HALF)
}

/// Episode state of `push-block`.
pub struct PushBlock {
    block: RigidBodyHandle,
    goal: V2,
}

impl Task for PushBlock {
    const DEF: TaskDef = TaskDef {
        name: "push-block",
        description: "push the sliding orange block completely into the yellow square",
        max_steps: 50,
    };

    fn build(rng: &mut ChaCha8Rng) -> (Scene, Self) {
        let q = std::f32::consts::FRAC_PI_4;
        let (c, th, goal) = loop {
            let c = V2::new(rng.gen_range(120.0..392.0), rng.gen_range(120.0..392.0));
            let th = rng.gen_range(-q..q);
            let g = V2::new(rng.gen_range(110.0..402.0), rng.gen_range(110.0..402.0));
            if (g - c).length() >= 150.0 {
                break (c, th, g);
            }
        };
        let corners = block_corners(c.x, c.y, th);
        let pusher = sample_pusher(rng, 40.0, 472.0, PUSHER_RADIUS + 4.0, &[&corners]);
        let mut scene = Scene::new(pusher);
        let w = &mut scene.world;
        let block = w.bodies.insert(
            RigidBodyBuilder::dynamic()
                .translation(to_sim(c))
                .rotation(th)
                .linear_damping(DAMPING)
                .angular_damping(DAMPING)
                .can_sleep(false),
        );
        let side = 2.0 * HALF * SIM;
        w.colliders.insert_with_parent(
            ColliderBuilder::cuboid(HALF * SIM, HALF * SIM)
                .density(1.0 / (side * side))
                .friction(0.5)
                .friction_combine_rule(CoefficientCombineRule::Max)
                .restitution(0.0),
            block,
            &mut w.bodies,
        );
        (scene, Self { block, goal })
    }

    fn object(&self) -> RigidBodyHandle {
        self.block
    }

    fn goal_pose(&self) -> [f32; 3] {
        [self.goal.x, self.goal.y, 0.0]
    }

    fn evaluate(&self, scene: &Scene) -> Eval {
        let o = self.object_pose(scene);
        let c = V2::new(o[0], o[1]);
        let p = scene.pusher_pos();
        let reach = 1.0 - (((p - c).length() - (HALF + PUSHER_RADIUS)).max(0.0) / 300.0).min(1.0);
        let place = 1.0 - ((c - self.goal).length() / 300.0).min(1.0);
        Eval::from_progress(0.1 * reach + 0.9 * place, inside(o, self.goal))
    }

    fn draw_static(&self, c: &mut Canvas) {
        let z = zone_corners(self.goal);
        c.fill_poly(&z, ZONE_COLOR);
        c.outline(&z, 5.0, ZONE_EDGE);
    }

    fn draw_dynamic(&self, scene: &Scene, c: &mut Canvas) {
        let o = self.object_pose(scene);
        c.fill_poly(&block_corners(o[0], o[1], o[2]), BLOCK_COLOR);
    }
}

/// Scripted expert for `push-block` (reads the privileged state).
#[derive(Default)]
pub struct PushBlockExpert {
    pushing: bool,
}

impl Controller for PushBlockExpert {
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
        let th = s[6];
        let vb = V2::new(s[7], s[8]);
        let g = V2::new(s[10], s[11]);
        // Where the block will stop if left alone (exponential velocity decay).
        let rest = c + vb / DAMPING;
        let e = g - rest;
        let dist = e.length();
        if dist < 3.0 && inside([rest.x, rest.y, th], g) {
            self.pushing = false;
            return reach(p, v, p);
        }
        let u = e / dist.max(1e-3);
        let a1 = rot(V2::new(1.0, 0.0), th);
        let a2 = rot(V2::new(0.0, 1.0), th);
        let extent = HALF * (u.dot(a1).abs() + u.dot(a2).abs());
        let contact = c - u * (extent + PUSHER_RADIUS);
        let pre = c - u * (extent + PUSHER_RADIUS + 10.0);
        let behind = (p - c).normalize_or_zero().dot(-u);
        if (p - pre).length() < 6.0
            || (self.pushing && behind > 0.85 && (p - contact).length() < 16.0)
        {
            self.pushing = true;
            let step = (0.5 * dist).min(20.0);
            return reach(p, v, contact + u * step);
        }
        self.pushing = false;
        let corners = block_corners(c.x, c.y, th);
        let blocked = |a: V2, b: V2| {
            let ab = b - a;
            let l = ab.length();
            if l < 1e-3 {
                return false;
            }
            let a2 = a + ab * (4.0f32.min(l) / l);
            segment_poly_dist(a2, b, &corners) < PUSHER_RADIUS + 2.0
        };
        let r = HALF * std::f32::consts::SQRT_2 + PUSHER_RADIUS + 12.0;
        let wp = around(p, pre, c, r, 28.0, 0.0, blocked);
        move_toward(p, v, wp, 28.0)
    }
}
