//! `button-press-v3`: push a button on the front of a box in +y. The task vector is the box position.
//! Success: the button within 0.02 (in y) of the hole behind it.

use super::{f32x3, one_object, TaskImpl, TaskSpec, HAND_HIGH, HAND_LOW};
use crate::metaworld::reward::{hamacher_product, tolerance};
use crate::metaworld::sim::{add3, norm3, sub3, vec3, Sim, Vec3};
use crate::metaworld::MetaWorldError;

pub static SPEC: TaskSpec = TaskSpec {
    name: "button-press",
    xml: "sawyer_xyz/sawyer_button_press.xml",
    hand_low: HAND_LOW,
    hand_high: HAND_HIGH,
    hand_init: f32x3([0.0, 0.4, 0.2]),
    reset_low: &[-0.1, 0.85, 0.115],
    reset_high: &[0.1, 0.9, 0.115],
    goal_low: HAND_LOW,
    goal_high: HAND_HIGH,
    min_obj_goal_xy: None,
    description: "push the button on the front of a box",
};

/// The button's observed position is its body origin moved to the button face.
const BUTTON_OFFSET: Vec3 = [0.0, -0.193, 0.0];

pub struct ButtonPress {
    box_body: usize,
    button: usize,
    hole: usize,
    button_start: usize,
    button_qpos: usize,
    target: Vec3,
    init_tcp: Vec3,
    obj_to_target_init: f64,
}

impl ButtonPress {
    pub fn new(sim: &Sim) -> Result<Self, MetaWorldError> {
        Ok(ButtonPress {
            box_body: sim.body("box")?,
            button: sim.body("button")?,
            hole: sim.site("hole")?,
            button_start: sim.site("buttonStart")?,
            button_qpos: sim.joint_qpos("btnbox_joint")?,
            target: [0.0; 3],
            init_tcp: [0.0; 3],
            obj_to_target_init: 0.0,
        })
    }
}

impl TaskImpl for ButtonPress {
    fn prepare_model(&mut self, sim: &mut Sim, rv: &[f64]) {
        sim.set_body_pos(self.box_body, vec3(rv));
    }

    fn reset(&mut self, sim: &mut Sim, _rv: &[f64], init_tcp: Vec3) -> Vec3 {
        self.init_tcp = init_tcp;
        let q = self.button_qpos;
        sim.set_qpos_qvel(&[(q, 0.0)], q..q + 1);
        self.target = sim.site_xpos(self.hole);
        self.obj_to_target_init = (self.target[1] - sim.site_xpos(self.button_start)[1]).abs();
        self.target
    }

    fn objects(&self, sim: &Sim) -> [f64; 14] {
        one_object(
            add3(sim.xpos(self.button), BUTTON_OFFSET),
            sim.xquat(self.button),
        )
    }

    fn evaluate(&self, sim: &Sim, obs: &[f64; 39], _action: [f32; 4]) -> (f64, bool) {
        let obj = vec3(&obs[4..7]);
        let tcp = sim.tcp_center();
        let tcp_to_obj = norm3(sub3(obj, tcp));
        let tcp_to_obj_init = norm3(sub3(obj, self.init_tcp));
        let obj_to_target = (self.target[1] - obj[1]).abs();
        let tcp_closed = obs[3].max(0.0);
        let near_button = tolerance(tcp_to_obj, 0.0, 0.05, tcp_to_obj_init);
        let button_pressed = tolerance(obj_to_target, 0.0, 0.005, self.obj_to_target_init);
        let mut reward = 2.0 * hamacher_product(tcp_closed, near_button);
        if tcp_to_obj <= 0.05 {
            reward += 8.0 * button_pressed;
        }
        (reward, obj_to_target <= 0.02)
    }
}
