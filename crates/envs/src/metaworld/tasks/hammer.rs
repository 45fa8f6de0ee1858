//! `hammer-v3`: pick up a hammer and drive a nail into a box. The task vector is the hammer's position; the
//! box is fixed. Success: the nail driven in by more than 0.09.

use super::{TaskImpl, TaskSpec, HAND_HIGH, HAND_LOW};
use crate::metaworld::reward::{gripper_caging, tolerance, Caging, CagingDensity};
use crate::metaworld::sim::{add3, norm3, sub3, vec3, Sim, Vec3};
use crate::metaworld::MetaWorldError;

pub static SPEC: TaskSpec = TaskSpec {
    name: "hammer",
    xml: "sawyer_xyz/sawyer_hammer.xml",
    hand_low: HAND_LOW,
    hand_high: HAND_HIGH,
    hand_init: [0.0, 0.4, 0.2],
    reset_low: &[-0.1, 0.4, 0.0],
    reset_high: &[0.1, 0.5, 0.0],
    goal_low: [0.2399, 0.7399, 0.109],
    goal_high: [0.2401, 0.7401, 0.111],
    min_obj_goal_xy: None,
    description: "hammer a nail into a box",
};

const BOX_POS: Vec3 = [0.24, 0.85, 0.0];
const HANDLE_LENGTH: f64 = 0.14;
const CAGING: Caging = Caging {
    obj_radius: 0.015,
    pad_success_thresh: 0.02,
    object_reach_radius: 0.01,
    xz_thresh: 0.01,
    desired_gripper_effort: 1.0,
    density: CagingDensity::High,
};

pub struct Hammer {
    box_body: usize,
    hammer: usize,
    nail: usize,
    goal_site: usize,
    hammer_qpos: usize,
    nail_qpos: usize,
    target: Vec3,
    obj_init: Vec3,
    init_tcp: Vec3,
}

impl Hammer {
    pub fn new(sim: &Sim) -> Result<Self, MetaWorldError> {
        Ok(Hammer {
            box_body: sim.body("box")?,
            hammer: sim.body("hammer")?,
            nail: sim.body("nail_link")?,
            goal_site: sim.site("goal")?,
            hammer_qpos: 9,
            nail_qpos: sim.joint_qpos("NailSlideJoint")?,
            target: [0.0; 3],
            obj_init: [0.0; 3],
            init_tcp: [0.0; 3],
        })
    }
}

impl TaskImpl for Hammer {
    fn prepare_model(&mut self, sim: &mut Sim, _rv: &[f64]) {
        sim.set_body_pos(self.box_body, BOX_POS);
    }

    fn reset(&mut self, sim: &mut Sim, rv: &[f64], init_tcp: Vec3) -> Vec3 {
        self.init_tcp = init_tcp;
        self.target = sim.site_xpos(self.goal_site);
        self.obj_init = vec3(rv);
        let q = self.hammer_qpos;
        sim.set_qpos_qvel(&[(q, rv[0]), (q + 1, rv[1]), (q + 2, rv[2])], 9..15);
        self.target
    }

    fn objects(&self, sim: &Sim) -> [f64; 14] {
        let mut o = [0.0; 14];
        o[..3].copy_from_slice(&sim.xpos(self.hammer));
        o[3..7].copy_from_slice(&sim.xquat(self.hammer));
        o[7..10].copy_from_slice(&sim.xpos(self.nail));
        o[10..].copy_from_slice(&sim.xquat(self.nail));
        o
    }

    fn evaluate(&self, sim: &Sim, obs: &[f64; 39], action: [f32; 4]) -> (f64, bool) {
        let hand = vec3(&obs[..3]);
        let hammer = vec3(&obs[4..7]);
        let hammer_head = add3(hammer, [0.16, 0.06, 0.0]);
        // the caging term assumes a sphere; along the handle, the grasp point follows the hand in x
        let mut threshed = hammer;
        if (hammer[0] - hand[0]).abs() < HANDLE_LENGTH / 2.0 {
            threshed[0] = hand[0];
        }
        // a laid-down hammer has quaternion [1, 0, 0, 0]
        let q = &obs[7..11];
        let quat_err = ((q[0] - 1.0).powi(2) + q[1].powi(2) + q[2].powi(2) + q[3].powi(2)).sqrt();
        let reward_quat = (1.0 - quat_err / 0.4).max(0.0);
        let reward_grab = gripper_caging(
            sim,
            &CAGING,
            action[3],
            threshed,
            self.obj_init,
            self.init_tcp,
        );
        let lifted = if hammer_head[2] > 0.02 { 1.0 } else { 0.0 };
        let reward_in_place =
            0.1 * lifted + 0.9 * tolerance(norm3(sub3(self.target, hammer_head)), 0.0, 0.02, 0.2);
        let mut reward = (2.0 * reward_grab + 6.0 * reward_in_place) * reward_quat;
        let success = sim.qpos(self.nail_qpos) > 0.09;
        if success && reward > 5.0 {
            reward = 10.0;
        }
        (reward, success)
    }
}
