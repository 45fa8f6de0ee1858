//! `coffee-pull-v3`: pull a mug out from under a coffee machine to a goal in front of it. The task vector is
//! (mug position, goal position); the machine sits 0.22 behind the mug. Success: the mug within 0.07 of the goal.

use super::{one_object, TaskImpl, TaskSpec, HAND_HIGH, HAND_LOW};
use crate::metaworld::reward::{
    gripper_caging, hamacher_product, tolerance, Caging, CagingDensity,
};
use crate::metaworld::sim::{add3, mul3, norm3, quat_xyzw_from_mat, sub3, vec3, Sim, Vec3};
use crate::metaworld::MetaWorldError;

pub static SPEC: TaskSpec = TaskSpec {
    name: "coffee-pull",
    xml: "sawyer_xyz/sawyer_coffee.xml",
    hand_low: HAND_LOW,
    hand_high: HAND_HIGH,
    hand_init: [0.0, 0.4, 0.2],
    reset_low: &[-0.05, 0.7, -0.001, -0.1, 0.55, -0.001],
    reset_high: &[0.05, 0.75, 0.001, 0.1, 0.65, 0.001],
    goal_low: [-0.1, 0.55, -0.001],
    goal_high: [0.1, 0.65, 0.001],
    min_obj_goal_xy: Some(0.15),
    description: "pull a mug from under a coffee machine to a goal",
};

const CAGING: Caging = Caging {
    obj_radius: 0.02,
    pad_success_thresh: 0.05,
    object_reach_radius: 0.04,
    xz_thresh: 0.05,
    desired_gripper_effort: 0.7,
    density: CagingDensity::Medium,
};

pub struct CoffeePull {
    obj: usize,
    mug: usize,
    machine: usize,
    goal_site: usize,
    mug_qpos: usize,
    target: Vec3,
    obj_init: Vec3,
    init_tcp: Vec3,
}

impl CoffeePull {
    pub fn new(sim: &Sim) -> Result<Self, MetaWorldError> {
        Ok(CoffeePull {
            obj: sim.body("obj")?,
            mug: sim.geom("mug")?,
            machine: sim.body("coffee_machine")?,
            goal_site: sim.site("mug_goal")?,
            // the mug's free joint is the first joint of the scene (Meta-World writes qpos[0:3])
            mug_qpos: 0,
            target: [0.0; 3],
            obj_init: [0.0; 3],
            init_tcp: [0.0; 3],
        })
    }
}

impl TaskImpl for CoffeePull {
    fn prepare_model(&mut self, sim: &mut Sim, rv: &[f64]) {
        sim.set_body_pos(self.machine, add3(vec3(rv), [0.0, 0.22, 0.0]));
        sim.set_site_pos(self.goal_site, vec3(&rv[3..]));
    }

    fn reset(&mut self, sim: &mut Sim, rv: &[f64], init_tcp: Vec3) -> Vec3 {
        self.init_tcp = init_tcp;
        let q = self.mug_qpos;
        // Meta-World zeroes qvel[9:15] here (arm joints, not the mug's); kept for identical results
        sim.set_qpos_qvel(&[(q, rv[0]), (q + 1, rv[1]), (q + 2, rv[2])], 9..15);
        self.obj_init = vec3(rv);
        self.target = vec3(&rv[3..]);
        self.target
    }

    fn objects(&self, sim: &Sim) -> [f64; 14] {
        one_object(
            sim.xpos(self.obj),
            quat_xyzw_from_mat(&sim.geom_xmat(self.mug)),
        )
    }

    fn evaluate(&self, sim: &Sim, obs: &[f64; 39], action: [f32; 4]) -> (f64, bool) {
        let obj = vec3(&obs[4..7]);
        let target = self.target;
        // x-y errors weighted up
        let scale = [2.0, 2.0, 1.0];
        let target_to_obj = norm3(mul3(sub3(obj, target), scale));
        let target_to_obj_init = norm3(mul3(sub3(self.obj_init, target), scale));
        let in_place = tolerance(target_to_obj, 0.0, 0.05, target_to_obj_init);
        let tcp_opened = obs[3];
        let tcp_to_obj = norm3(sub3(obj, sim.tcp_center()));
        let object_grasped =
            gripper_caging(sim, &CAGING, action[3], obj, self.obj_init, self.init_tcp);
        let mut reward = hamacher_product(object_grasped, in_place);
        if tcp_to_obj < 0.04 && tcp_opened > 0.0 {
            reward += 1.0 + 5.0 * in_place;
        }
        if target_to_obj < 0.05 {
            reward = 10.0;
        }
        (reward, norm3(sub3(obj, target)) <= 0.07)
    }
}
