//! `door-lock-v3`: turn a door's lock down. The task vector is the door's position. Success: the lock within
//! 0.02 (in z) of its goal 0.1 below its start.

use super::{f32x3, one_object, TaskImpl, TaskSpec, HAND_HIGH, HAND_LOW_DEEP};
use crate::metaworld::reward::{hamacher_product, tolerance};
use crate::metaworld::sim::{add3, mul3, norm3, sub3, vec3, Sim, Vec3, FRAME_SKIP};
use crate::metaworld::MetaWorldError;

pub static SPEC: TaskSpec = TaskSpec {
    name: "door-lock",
    xml: "sawyer_xyz/sawyer_door_lock.xml",
    hand_low: HAND_LOW_DEEP,
    hand_high: HAND_HIGH,
    hand_init: f32x3([0.0, 0.6, 0.2]),
    reset_low: &[-0.1, 0.8, 0.15],
    reset_high: &[0.1, 0.85, 0.15],
    goal_low: HAND_LOW_DEEP,
    goal_high: HAND_HIGH,
    min_obj_goal_xy: None,
    description: "turn the lock of a door down",
};

const LOCK_LENGTH: f64 = 0.1;

pub struct DoorLock {
    door: usize,
    door_link: usize,
    lock_link: usize,
    lock_start: usize,
    target: Vec3,
}

impl DoorLock {
    pub fn new(sim: &Sim) -> Result<Self, MetaWorldError> {
        Ok(DoorLock {
            door: sim.body("door")?,
            door_link: sim.body("door_link")?,
            lock_link: sim.body("lock_link")?,
            lock_start: sim.site("lockStartLock")?,
            target: [0.0; 3],
        })
    }
}

impl TaskImpl for DoorLock {
    fn prepare_model(&mut self, sim: &mut Sim, rv: &[f64]) {
        sim.set_body_pos(self.door, vec3(rv));
    }

    fn reset(&mut self, sim: &mut Sim, _rv: &[f64], _init_tcp: Vec3) -> Vec3 {
        // Meta-World lets the moved door settle for one frame (plain mj_step, controls unchanged)
        for _ in 0..FRAME_SKIP {
            sim.data.step();
        }
        self.target = add3(sim.xpos(self.lock_link), [0.0, -0.04, -0.1]);
        self.target
    }

    fn objects(&self, sim: &Sim) -> [f64; 14] {
        one_object(sim.site_xpos(self.lock_start), sim.xquat(self.door_link))
    }

    fn evaluate(&self, sim: &Sim, obs: &[f64; 39], _action: [f32; 4]) -> (f64, bool) {
        let obj = vec3(&obs[4..7]);
        let tcp = sim.xpos(sim.ids.leftpad);
        let scale = [0.25, 1.0, 0.5];
        let tcp_to_obj = norm3(mul3(sub3(obj, tcp), scale));
        // Meta-World's `init_left_pad` is a live view of the left pad, so this equals `tcp_to_obj`
        let tcp_to_obj_init = norm3(mul3(sub3(obj, sim.xpos(sim.ids.leftpad)), scale));
        let obj_to_target = (self.target[2] - obj[2]).abs();
        let tcp_opened = obs[3].max(0.0);
        let near_lock = tolerance(tcp_to_obj, 0.0, 0.01, tcp_to_obj_init);
        let lock_pressed = tolerance(obj_to_target, 0.0, 0.005, LOCK_LENGTH);
        let reward = 2.0 * hamacher_product(tcp_opened, near_lock) + 8.0 * lock_pressed;
        (reward, obj_to_target <= 0.02)
    }
}
