//! `lever-pull-v3`: raise a lever to point straight up. The task vector is the lever's base position.
//! Success: the lever within pi/24 of vertical.

use std::f64::consts::PI;

use super::{f32x3, one_object, TaskImpl, TaskSpec, HAND_HIGH, HAND_LOW_DEEP};
use crate::metaworld::reward::{hamacher_product, tolerance};
use crate::metaworld::sim::{add3, mul3, norm3, quat_xyzw_from_mat, sub3, vec3, Sim, Vec3};
use crate::metaworld::MetaWorldError;

pub static SPEC: TaskSpec = TaskSpec {
    name: "lever-pull",
    xml: "sawyer_xyz/sawyer_lever_pull.xml",
    hand_low: HAND_LOW_DEEP,
    hand_high: HAND_HIGH,
    hand_init: f32x3([0.0, 0.4, 0.2]),
    reset_low: &[-0.1, 0.7, 0.0],
    reset_high: &[0.1, 0.8, 0.0],
    goal_low: HAND_LOW_DEEP,
    goal_high: HAND_HIGH,
    min_obj_goal_xy: None,
    description: "pull a lever up to vertical",
};

const LEVER_RADIUS: f64 = 0.2;

pub struct LeverPull {
    lever: usize,
    goal_site: usize,
    lever_start: usize,
    obj_geom: usize,
    axis_qpos: usize,
    target: Vec3,
    lever_pos_init: Vec3,
    init_tcp: Vec3,
}

impl LeverPull {
    pub fn new(sim: &Sim) -> Result<Self, MetaWorldError> {
        Ok(LeverPull {
            lever: sim.body("lever")?,
            goal_site: sim.site("goal")?,
            lever_start: sim.site("leverStart")?,
            obj_geom: sim.geom("objGeom")?,
            axis_qpos: sim.joint_qpos("LeverAxis")?,
            target: [0.0; 3],
            lever_pos_init: [0.0; 3],
            init_tcp: [0.0; 3],
        })
    }

    fn target_of(rv: &[f64]) -> Vec3 {
        add3(vec3(rv), [0.12, 0.0, 0.25 + LEVER_RADIUS])
    }
}

impl TaskImpl for LeverPull {
    fn prepare_model(&mut self, sim: &mut Sim, rv: &[f64]) {
        sim.set_body_pos(self.lever, vec3(rv));
        sim.set_site_pos(self.goal_site, Self::target_of(rv));
    }

    fn reset(&mut self, _sim: &mut Sim, rv: &[f64], init_tcp: Vec3) -> Vec3 {
        self.init_tcp = init_tcp;
        self.lever_pos_init = add3(vec3(rv), [0.12, -LEVER_RADIUS, 0.25]);
        self.target = Self::target_of(rv);
        self.target
    }

    fn objects(&self, sim: &Sim) -> [f64; 14] {
        one_object(
            sim.site_xpos(self.lever_start),
            quat_xyzw_from_mat(&sim.geom_xmat(self.obj_geom)),
        )
    }

    fn evaluate(&self, sim: &Sim, obs: &[f64; 39], _action: [f32; 4]) -> (f64, bool) {
        let gripper = vec3(&obs[..3]);
        let lever = vec3(&obs[4..7]);
        // y error weighted down, and an offset that brings the arm's shoulder (not the fingers) under the lever
        let scale = [4.0, 1.0, 4.0];
        let offset = [0.0, 0.055, 0.07];
        let shoulder_to_lever = mul3(sub3(add3(gripper, offset), lever), scale);
        let shoulder_to_lever_init = mul3(
            sub3(add3(self.init_tcp, offset), self.lever_pos_init),
            scale,
        );
        let ready_to_lift = tolerance(
            norm3(shoulder_to_lever),
            0.0,
            0.02,
            norm3(shoulder_to_lever_init),
        );
        let lever_angle = -sim.qpos(self.axis_qpos);
        let lever_error = (lever_angle - PI / 2.0).abs();
        let obj_to_target = norm3(sub3(lever, self.target));
        let in_place_margin = norm3(sub3(self.lever_pos_init, self.target));
        let in_place = tolerance(obj_to_target, 0.0, 0.04, in_place_margin);
        let reward = 10.0 * hamacher_product(ready_to_lift, in_place);
        (reward, lever_error <= PI / 24.0)
    }
}
