//! The Sawyer arm of Meta-World v3 on MuJoCo: model loading with the weld fix, the mocap action, the hand reset,
//! and the 18 values of the current-frame observation (`SawyerXYZEnv` in metaworld 3.1.1).
//!
//! Everything here follows the sequence of MuJoCo calls of the Python reference, so that the same inputs give
//! the same floating-point results (the parity tests compare against metaworld running on the same libmujoco).

use std::path::Path;

use mujoco_rs::prelude::*;

use super::MetaWorldError;

pub type Vec3 = [f64; 3];

pub fn add3(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
pub fn sub3(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub fn mul3(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] * b[0], a[1] * b[1], a[2] * b[2]]
}
pub fn norm3(a: Vec3) -> f64 {
    (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt()
}
pub fn vec3(s: &[f64]) -> Vec3 {
    [s[0], s[1], s[2]]
}

/// Simulator sub-steps per environment step (`frame_skip`).
pub const FRAME_SKIP: usize = 5;
/// Iterations of the hand reset (each `FRAME_SKIP` sub-steps).
pub const HAND_RESET_STEPS: usize = 50;
/// The mocap displacement per unit of action (`action_scale`).
pub const ACTION_SCALE: f32 = 1.0 / 100.0;
/// The mocap orientation Meta-World writes every step (not normalised; MuJoCo normalises mocap quaternions).
const MOCAP_QUAT: [f64; 4] = [1.0, 0.0, 1.0, 0.0];
/// Weld data written by `reset_mocap_welds`; MuJoCo 3.17 has 12 `eq_data` slots, only the first 11 are set.
const WELD_DATA: [f64; 11] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0];

/// Ids of the parts of the arm every task uses.
#[derive(Clone, Copy, Debug)]
pub struct ArmIds {
    pub hand: usize,
    pub rightclaw: usize,
    pub leftclaw: usize,
    pub leftpad: usize,
    pub rightpad: usize,
    pub right_ee: usize,
    pub left_ee: usize,
    pub mocap: usize,
}

/// A loaded Meta-World scene.
pub struct Sim {
    pub data: MjData<Box<MjModel>>,
    pub ids: ArmIds,
    xml: String,
}

impl Sim {
    /// Loads a scene XML, applies the zero-offset weld between the mocap body and the hand, and runs
    /// `mj_forward` (as the Python environment's constructor does).
    pub fn load(path: &Path) -> Result<Sim, MetaWorldError> {
        let xml = path.display().to_string();
        let mut model = MjModel::from_xml(path).map_err(|e| MetaWorldError::ModelLoad {
            path: xml.clone(),
            reason: format!("{e:?}"),
        })?;
        let neq = model.ffi().neq as usize;
        for i in 0..neq {
            if model.eq_type()[i] == MjtEq::mjEQ_WELD {
                // SAFETY: only the numeric weld parameters change; no size or structure of the model does.
                unsafe { model.eq_data_mut()[i][..11].copy_from_slice(&WELD_DATA) };
            }
        }
        let data = MjData::try_new(Box::new(model)).map_err(|e| MetaWorldError::ModelLoad {
            path: xml.clone(),
            reason: format!("{e:?}"),
        })?;
        let mut sim = Sim {
            data,
            ids: ArmIds {
                hand: 0,
                rightclaw: 0,
                leftclaw: 0,
                leftpad: 0,
                rightpad: 0,
                right_ee: 0,
                left_ee: 0,
                mocap: 0,
            },
            xml,
        };
        let mocap_body = sim.body("mocap")?;
        let mocap = sim.model().body_mocapid()[mocap_body];
        if mocap < 0 {
            return Err(sim.missing("mocap body", "mocap"));
        }
        sim.ids = ArmIds {
            hand: sim.body("hand")?,
            rightclaw: sim.body("rightclaw")?,
            leftclaw: sim.body("leftclaw")?,
            leftpad: sim.body("leftpad")?,
            rightpad: sim.body("rightpad")?,
            right_ee: sim.site("rightEndEffector")?,
            left_ee: sim.site("leftEndEffector")?,
            mocap: mocap as usize,
        };
        if sim.model().ffi().nu != 2 {
            return Err(MetaWorldError::ModelLoad {
                path: sim.xml.clone(),
                reason: format!(
                    "expected 2 gripper actuators, found {}",
                    sim.model().ffi().nu
                ),
            });
        }
        sim.data.forward();
        Ok(sim)
    }

    pub fn model(&self) -> &MjModel {
        self.data.model()
    }

    /// Mutable access to the model for the edits Meta-World makes at reset (body and site positions,
    /// visual quality).
    pub fn model_mut(&mut self) -> &mut MjModel {
        // SAFETY: callers only change numeric values (positions, render settings), never sizes, so the model
        // stays compatible with its data.
        unsafe { self.data.model_mut() }
    }

    fn missing(&self, kind: &str, name: &str) -> MetaWorldError {
        MetaWorldError::ModelLoad {
            path: self.xml.clone(),
            reason: format!("the scene has no {kind} named '{name}'"),
        }
    }

    fn id(&self, ty: MjtObjBase, kind: &str, name: &str) -> Result<usize, MetaWorldError> {
        self.model()
            .name_to_id(ty, name)
            .ok_or_else(|| self.missing(kind, name))
    }
    pub fn body(&self, name: &str) -> Result<usize, MetaWorldError> {
        self.id(MjtObjBase::mjOBJ_BODY, "body", name)
    }
    pub fn site(&self, name: &str) -> Result<usize, MetaWorldError> {
        self.id(MjtObjBase::mjOBJ_SITE, "site", name)
    }
    pub fn geom(&self, name: &str) -> Result<usize, MetaWorldError> {
        self.id(MjtObjBase::mjOBJ_GEOM, "geom", name)
    }
    pub fn camera(&self, name: &str) -> Result<usize, MetaWorldError> {
        self.id(MjtObjBase::mjOBJ_CAMERA, "camera", name)
    }
    /// Address in `qpos` of a named joint.
    pub fn joint_qpos(&self, name: &str) -> Result<usize, MetaWorldError> {
        let j = self.id(MjtObjBase::mjOBJ_JOINT, "joint", name)?;
        Ok(self.model().jnt_qposadr()[j] as usize)
    }

    pub fn xpos(&self, body: usize) -> Vec3 {
        self.data.xpos()[body]
    }
    pub fn xquat(&self, body: usize) -> [f64; 4] {
        self.data.xquat()[body]
    }
    pub fn xmat(&self, body: usize) -> [f64; 9] {
        self.data.xmat()[body]
    }
    pub fn geom_xmat(&self, geom: usize) -> [f64; 9] {
        self.data.geom_xmat()[geom]
    }
    pub fn site_xpos(&self, site: usize) -> Vec3 {
        self.data.site_xpos()[site]
    }
    pub fn qpos(&self, adr: usize) -> f64 {
        self.data.qpos()[adr]
    }
    pub fn set_body_pos(&mut self, body: usize, pos: Vec3) {
        self.model_mut().body_pos_mut()[body] = pos;
    }
    pub fn set_site_pos(&mut self, site: usize, pos: Vec3) {
        self.model_mut().site_pos_mut()[site] = pos;
    }

    /// `set_state(qpos', qvel')` after editing a few entries: writes them and runs `mj_forward`.
    pub fn set_qpos_qvel(&mut self, qpos: &[(usize, f64)], qvel_zero: std::ops::Range<usize>) {
        for &(i, v) in qpos {
            self.data.qpos_mut()[i] = v;
        }
        for i in qvel_zero {
            self.data.qvel_mut()[i] = 0.0;
        }
        self.data.forward();
    }

    /// `do_simulation(ctrl, n)`: sets the two gripper controls, runs `n` `mj_step`s, then
    /// `mj_rnePostConstraint`.
    pub fn do_simulation(&mut self, ctrl: [f64; 2], n: usize) {
        self.data.ctrl_mut()[..2].copy_from_slice(&ctrl);
        for _ in 0..n {
            self.data.step();
        }
        self.data.rne_post_constraint();
    }

    /// `set_xyz_action`: moves the mocap by `clip(a, -1, 1) / 100` (float32 arithmetic, as numpy does on a
    /// float32 action), clipped to the mocap bounds, and resets the mocap orientation.
    pub fn set_xyz_action(&mut self, a: [f32; 3], low: Vec3, high: Vec3) {
        let m = self.ids.mocap;
        let mut pos = self.data.mocap_pos()[m];
        for k in 0..3 {
            let delta = a[k].clamp(-1.0, 1.0) * ACTION_SCALE;
            pos[k] = (pos[k] + delta as f64).max(low[k]).min(high[k]);
        }
        self.data.mocap_pos_mut()[m] = pos;
        self.data.mocap_quat_mut()[m] = MOCAP_QUAT;
    }

    /// `_reset_hand`: holds the mocap at `hand_init` with the gripper opening for 50 x 5 sub-steps; returns
    /// the tool centre point afterwards (`init_tcp`).
    pub fn reset_hand(&mut self, hand_init: Vec3) -> Vec3 {
        let m = self.ids.mocap;
        for _ in 0..HAND_RESET_STEPS {
            self.data.mocap_pos_mut()[m] = hand_init;
            self.data.mocap_quat_mut()[m] = MOCAP_QUAT;
            self.do_simulation([-1.0, 1.0], FRAME_SKIP);
        }
        self.tcp_center()
    }

    /// Mid-point of the two finger end-effector sites.
    pub fn tcp_center(&self) -> Vec3 {
        let r = self.site_xpos(self.ids.right_ee);
        let l = self.site_xpos(self.ids.left_ee);
        [
            (r[0] + l[0]) / 2.0,
            (r[1] + l[1]) / 2.0,
            (r[2] + l[2]) / 2.0,
        ]
    }

    /// The 18 current-frame values: hand position, gripper opening (finger distance / 0.1 clipped to [0, 1]),
    /// and the 14 padded object slots filled by the task.
    pub fn curr_obs(&self, objects: &[f64; 14]) -> [f64; 18] {
        let mut o = [0.0; 18];
        o[..3].copy_from_slice(&self.xpos(self.ids.hand));
        let d = norm3(sub3(
            self.xpos(self.ids.rightclaw),
            self.xpos(self.ids.leftclaw),
        ));
        o[3] = (d / 0.1).clamp(0.0, 1.0);
        o[4..].copy_from_slice(objects);
        o
    }
}

/// Quaternion (x, y, z, w) of a row-major rotation matrix, as `scipy.spatial.transform.Rotation.from_matrix(m)
/// .as_quat()` computes it (Shepperd's method on the largest of the diagonal and the trace, not canonicalised),
/// which is what Meta-World puts into the observation for some objects.
pub fn quat_xyzw_from_mat(m: &[f64; 9]) -> [f64; 4] {
    let at = |i: usize, j: usize| m[3 * i + j];
    let trace = at(0, 0) + at(1, 1) + at(2, 2);
    let decision = [at(0, 0), at(1, 1), at(2, 2), trace];
    let mut choice = 0;
    for (k, v) in decision.iter().enumerate() {
        if *v > decision[choice] {
            choice = k;
        }
    }
    let mut q = [0.0; 4];
    if choice != 3 {
        let i = choice;
        let j = (i + 1) % 3;
        let k = (j + 1) % 3;
        q[i] = 1.0 - trace + 2.0 * at(i, i);
        q[j] = at(j, i) + at(i, j);
        q[k] = at(k, i) + at(i, k);
        q[3] = at(k, j) - at(j, k);
    } else {
        q[0] = at(2, 1) - at(1, 2);
        q[1] = at(0, 2) - at(2, 0);
        q[2] = at(1, 0) - at(0, 1);
        q[3] = 1.0 + trace;
    }
    let n = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
    [q[0] / n, q[1] / n, q[2] / n, q[3] / n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quat_of_identity_and_half_turn() {
        let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(quat_xyzw_from_mat(&id), [0.0, 0.0, 0.0, 1.0]);
        // 180 degrees about z
        let rz = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0];
        let q = quat_xyzw_from_mat(&rz);
        assert!((q[2].abs() - 1.0).abs() < 1e-12 && q[3].abs() < 1e-12);
    }
}
