//! `handle-pull-v3`: pull a handle up along its rail. The task vector is the handle box's position.
//! Success: the handle within 0.05 (in z) of the goal.

use super::{one_object, TaskImpl, TaskSpec, HAND_HIGH, HAND_LOW};
use crate::metaworld::reward::{
    gripper_caging, hamacher_product, tolerance, Caging, CagingDensity,
};
use crate::metaworld::sim::{norm3, sub3, vec3, Sim, Vec3};
use crate::metaworld::MetaWorldError;

pub static SPEC: TaskSpec = TaskSpec {
    name: "handle-pull",
    xml: "sawyer_xyz/sawyer_handle_press.xml",
    hand_low: HAND_LOW,
    hand_high: HAND_HIGH,
    hand_init: [0.0, 0.6, 0.2],
    reset_low: &[-0.1, 0.8, -0.001],
    reset_high: &[0.1, 0.9, 0.001],
    goal_low: [-0.1, 0.55, 0.04],
    goal_high: [0.1, 0.70, 0.18],
    min_obj_goal_xy: None,
    description: "pull a handle up along its rail",
};

const TARGET_RADIUS: f64 = 0.05;
const CAGING: Caging = Caging {
    obj_radius: 0.022,
    pad_success_thresh: 0.05,
    object_reach_radius: 0.01,
    xz_thresh: 0.01,
    desired_gripper_effort: 1.0,
    density: CagingDensity::High,
};

pub struct HandlePull {
    box_body: usize,
    handle_right: usize,
    goal_pull: usize,
    handle_qpos: usize,
    target: Vec3,
    obj_init: Vec3,
    init_tcp: Vec3,
}

impl HandlePull {
    pub fn new(sim: &Sim) -> Result<Self, MetaWorldError> {
        Ok(HandlePull {
            box_body: sim.body("box")?,
            handle_right: sim.site("handleRight")?,
            goal_pull: sim.site("goalPull")?,
            handle_qpos: 9,
            target: [0.0; 3],
            obj_init: [0.0; 3],
            init_tcp: [0.0; 3],
        })
    }
}

impl TaskImpl for HandlePull {
    fn prepare_model(&mut self, sim: &mut Sim, rv: &[f64]) {
        sim.set_body_pos(self.box_body, vec3(rv));
    }

    fn reset(&mut self, sim: &mut Sim, rv: &[f64], init_tcp: Vec3) -> Vec3 {
        self.init_tcp = init_tcp;
        self.obj_init = vec3(rv);
        let q = self.handle_qpos;
        sim.set_qpos_qvel(&[(q, -0.1)], q..q + 1);
        self.target = sim.site_xpos(self.goal_pull);
        self.target
    }

    fn objects(&self, sim: &Sim) -> [f64; 14] {
        one_object(sim.site_xpos(self.handle_right), [0.0; 4])
    }

    fn evaluate(&self, sim: &Sim, obs: &[f64; 39], action: [f32; 4]) -> (f64, bool) {
        let obj = vec3(&obs[4..7]);
        let target_to_obj = (self.target[2] - obj[2]).abs();
        let target_to_obj_init = (self.target[2] - self.obj_init[2]).abs();
        let in_place = tolerance(target_to_obj, 0.0, TARGET_RADIUS, target_to_obj_init);
        let object_grasped =
            gripper_caging(sim, &CAGING, action[3], obj, self.obj_init, self.init_tcp);
        let mut reward = hamacher_product(object_grasped, in_place);
        let tcp_opened = obs[3];
        let tcp_to_obj = norm3(sub3(obj, sim.tcp_center()));
        // (Meta-World compares the handle's y with the initial z here; kept as is)
        if tcp_to_obj < 0.035 && tcp_opened > 0.0 && obj[1] - 0.01 > self.obj_init[2] {
            reward += 1.0 + 5.0 * in_place;
        }
        if target_to_obj < TARGET_RADIUS {
            reward = 10.0;
        }
        (reward, target_to_obj <= TARGET_RADIUS)
    }
}
