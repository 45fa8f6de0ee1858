//! `soccer-v3`: push a ball into a goal. The task vector is (ball position, goal position). Success: the ball
//! within 0.07 of the goal.

use super::{one_object, TaskImpl, TaskSpec, HAND_HIGH, HAND_LOW};
use crate::metaworld::reward::{hamacher_product, tolerance};
use crate::metaworld::sim::{mul3, norm3, quat_xyzw_from_mat, sub3, vec3, Sim, Vec3};
use crate::metaworld::MetaWorldError;

pub static SPEC: TaskSpec = TaskSpec {
    name: "soccer",
    xml: "sawyer_xyz/sawyer_soccer.xml",
    hand_low: HAND_LOW,
    hand_high: HAND_HIGH,
    hand_init: [0.0, 0.6, 0.2],
    reset_low: &[-0.1, 0.6, 0.03, -0.1, 0.8, 0.0],
    reset_high: &[0.1, 0.7, 0.03, 0.1, 0.9, 0.0],
    goal_low: [-0.1, 0.8, 0.0],
    goal_high: [0.1, 0.9, 0.0],
    min_obj_goal_xy: Some(0.15),
    description: "push a ball into a goal",
};

const OBJ_RADIUS: f64 = 0.013;
const TARGET_RADIUS: f64 = 0.07;
/// The ball rests at this height (Meta-World keeps the initial z of `obj_init_pos`).
const BALL_Z: f64 = 0.03;

pub struct Soccer {
    ball: usize,
    goal_whole: usize,
    goal_site: usize,
    ball_qpos: usize,
    target: Vec3,
    obj_init: Vec3,
    init_tcp: Vec3,
}

impl Soccer {
    pub fn new(sim: &Sim) -> Result<Self, MetaWorldError> {
        Ok(Soccer {
            ball: sim.body("soccer_ball")?,
            goal_whole: sim.body("goal_whole")?,
            goal_site: sim.site("goal")?,
            ball_qpos: 9,
            target: [0.0; 3],
            obj_init: [0.0; 3],
            init_tcp: [0.0; 3],
        })
    }

    /// Soccer's own caging reward (it overrides the base one): both pads around the ball in y, the tool centre
    /// over it in x-z, averaged with the gripping term.
    fn caging(&self, sim: &Sim, obj: Vec3) -> f64 {
        let pad_success_margin = 0.05;
        let grip_success_margin = OBJ_RADIUS + 0.01;
        let x_z_success_margin = 0.005;
        let tcp = sim.tcp_center();
        let left_pad = sim.xpos(sim.ids.leftpad);
        let right_pad = sim.xpos(sim.ids.rightpad);
        let delta_left = left_pad[1] - obj[1];
        let delta_right = obj[1] - right_pad[1];
        // Meta-World's `init_left_pad` / `init_right_pad` are live views of the pad positions
        let right_margin = ((obj[1] - right_pad[1]).abs() - pad_success_margin).abs();
        let left_margin = ((obj[1] - left_pad[1]).abs() - pad_success_margin).abs();
        let right_caging = tolerance(delta_right, OBJ_RADIUS, pad_success_margin, right_margin);
        let left_caging = tolerance(delta_left, OBJ_RADIUS, pad_success_margin, left_margin);
        let right_gripping = tolerance(delta_right, OBJ_RADIUS, grip_success_margin, right_margin);
        let left_gripping = tolerance(delta_left, OBJ_RADIUS, grip_success_margin, left_margin);
        let y_caging = hamacher_product(right_caging, left_caging);
        let y_gripping = hamacher_product(right_gripping, left_gripping);
        let xz = |a: Vec3, b: Vec3| norm3([a[0] - b[0], 0.0, a[2] - b[2]]);
        let margin = xz(self.obj_init, self.init_tcp) - x_z_success_margin;
        let x_z_caging = tolerance(xz(tcp, obj), 0.0, x_z_success_margin, margin);
        let caging = hamacher_product(y_caging, x_z_caging);
        let gripping = if caging > 0.95 { y_gripping } else { 0.0 };
        (caging + gripping) / 2.0
    }
}

impl TaskImpl for Soccer {
    fn prepare_model(&mut self, sim: &mut Sim, rv: &[f64]) {
        sim.set_body_pos(self.goal_whole, vec3(&rv[3..]));
        sim.set_site_pos(self.goal_site, vec3(&rv[3..]));
    }

    fn reset(&mut self, sim: &mut Sim, rv: &[f64], init_tcp: Vec3) -> Vec3 {
        self.init_tcp = init_tcp;
        self.target = vec3(&rv[3..]);
        self.obj_init = [rv[0], rv[1], BALL_Z];
        let q = self.ball_qpos;
        let o = self.obj_init;
        sim.set_qpos_qvel(&[(q, o[0]), (q + 1, o[1]), (q + 2, o[2])], 9..15);
        self.target
    }

    fn objects(&self, sim: &Sim) -> [f64; 14] {
        one_object(
            sim.xpos(self.ball),
            quat_xyzw_from_mat(&sim.xmat(self.ball)),
        )
    }

    fn evaluate(&self, sim: &Sim, obs: &[f64; 39], _action: [f32; 4]) -> (f64, bool) {
        let obj = vec3(&obs[4..7]);
        let target = self.target;
        let x_scaling = [3.0, 1.0, 1.0];
        let target_to_obj = norm3(mul3(sub3(obj, target), x_scaling));
        let target_to_obj_init = norm3(mul3(sub3(obj, self.obj_init), x_scaling));
        let mut in_place = tolerance(target_to_obj, 0.0, TARGET_RADIUS, target_to_obj_init);
        let goal_line = target[1] - 0.1;
        if obj[1] > goal_line && (obj[0] - target[0]).abs() > 0.10 {
            in_place =
                (in_place - 2.0 * ((obj[1] - goal_line) / (1.0 - goal_line))).clamp(0.0, 1.0);
        }
        let object_grasped = self.caging(sim, obj);
        let mut reward = 3.0 * object_grasped + 6.5 * in_place;
        if target_to_obj < TARGET_RADIUS {
            reward = 10.0;
        }
        (reward, norm3(sub3(obj, target)) <= 0.07)
    }
}
