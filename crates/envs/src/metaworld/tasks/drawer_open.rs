//! `drawer-open-v3`: pull a drawer open by its handle. The task vector is the drawer cabinet's position; the
//! goal is 0.2 in front of the closed handle. Success: the handle within 0.03 of the goal.

use super::{f32x3, one_object, TaskImpl, TaskSpec, HAND_HIGH, HAND_LOW};
use crate::metaworld::reward::tolerance;
use crate::metaworld::sim::{add3, mul3, norm3, sub3, vec3, Sim, Vec3};
use crate::metaworld::MetaWorldError;

pub static SPEC: TaskSpec = TaskSpec {
    name: "drawer-open",
    xml: "sawyer_xyz/sawyer_drawer.xml",
    hand_low: HAND_LOW,
    hand_high: HAND_HIGH,
    hand_init: f32x3([0.0, 0.6, 0.2]),
    reset_low: &[-0.1, 0.9, 0.0],
    reset_high: &[0.1, 0.9, 0.0],
    goal_low: HAND_LOW,
    goal_high: HAND_HIGH,
    min_obj_goal_xy: None,
    description: "pull a drawer open by its handle",
};

/// How far the drawer must open.
const MAX_DIST: f64 = 0.2;
const HANDLE_OFFSET: Vec3 = [0.0, -0.16, 0.0];

pub struct DrawerOpen {
    drawer: usize,
    drawer_link: usize,
    goal_site: usize,
    target: Vec3,
    init_tcp: Vec3,
}

impl DrawerOpen {
    pub fn new(sim: &Sim) -> Result<Self, MetaWorldError> {
        Ok(DrawerOpen {
            drawer: sim.body("drawer")?,
            drawer_link: sim.body("drawer_link")?,
            goal_site: sim.site("goal")?,
            target: [0.0; 3],
            init_tcp: [0.0; 3],
        })
    }

    fn target_of(rv: &[f64]) -> Vec3 {
        add3(vec3(rv), [0.0, -0.16 - MAX_DIST, 0.09])
    }
}

impl TaskImpl for DrawerOpen {
    fn prepare_model(&mut self, sim: &mut Sim, rv: &[f64]) {
        sim.set_body_pos(self.drawer, vec3(rv));
        sim.set_site_pos(self.goal_site, Self::target_of(rv));
    }

    fn reset(&mut self, _sim: &mut Sim, rv: &[f64], init_tcp: Vec3) -> Vec3 {
        self.init_tcp = init_tcp;
        self.target = Self::target_of(rv);
        self.target
    }

    fn objects(&self, sim: &Sim) -> [f64; 14] {
        one_object(
            add3(sim.xpos(self.drawer_link), HANDLE_OFFSET),
            sim.xquat(self.drawer_link),
        )
    }

    fn evaluate(&self, _sim: &Sim, obs: &[f64; 39], _action: [f32; 4]) -> (f64, bool) {
        let gripper = vec3(&obs[..3]);
        let handle = vec3(&obs[4..7]);
        let handle_error = norm3(sub3(handle, self.target));
        let reward_for_opening = tolerance(handle_error, 0.0, 0.02, MAX_DIST);
        let handle_pos_init = add3(self.target, [0.0, MAX_DIST, 0.0]);
        // x-y error weighted up so the gripper drops down beside the handle rather than onto it
        let scale = [3.0, 3.0, 1.0];
        let gripper_error = mul3(sub3(handle, gripper), scale);
        let gripper_error_init = mul3(sub3(handle_pos_init, self.init_tcp), scale);
        let reward_for_caging =
            tolerance(norm3(gripper_error), 0.0, 0.01, norm3(gripper_error_init));
        let reward = 5.0 * (reward_for_caging + reward_for_opening);
        (reward, handle_error <= 0.03)
    }
}
