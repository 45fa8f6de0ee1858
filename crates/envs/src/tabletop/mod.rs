//! The `tabletop` suite: a 2-D table seen from above, one pusher robot, several tasks.
//!
//! Pure Rust: rapier2d for the physics, tiny-skia for the pixels. Every task shares the pusher, the action
//! space, the state layout and the arena, so one world model and one policy can serve the whole suite.
//!
//! # Arena and physics
//! * The arena is 512 x 512 units (gym-pusht's pixel coordinates); x grows to the right, y grows **down**
//!   (image rows), angles turn x towards y (clockwise on screen). Walls run along x, y = 5 and 506 as in
//!   gym-pusht. Physics runs in metres-like units (1 arena unit = 0.01), with no gravity (top view).
//! * One control step is 10 physics sub-steps of 0.01 s (10 Hz control), as in gym-pusht.
//! * The pusher is a kinematic disc of radius [`PUSHER_RADIUS`] (gym-pusht uses 15; 20 keeps it visible at
//!   32x32 pixels) driven towards a target by a PD controller (`kp = 100`, `kv = 20`, gym-pusht's gains). It
//!   keeps its velocity from one step to the next. Frictionless; it passes over rails and walls, it never
//!   leaves the arena because its target is clamped to `[20, 492]`.
//!
//! # Action (shared by every task)
//! `a` in `[-1, 1]^2`. The PD target of this step is `pusher position + ACTION_SCALE * a` (`ACTION_SCALE` = 50
//! arena units, about 6 pixels at 64x64), clamped to the arena. Holding `a` constant moves the pusher at about
//! 20 units per step per unit of `a`; `a = 0` brakes. Finite values outside `[-1, 1]` are clipped to it; NaN
//! or infinite values are refused with an error.
//!
//! # State (shared layout, [`STATE_DIM`] = 13 floats, arena units and radians)
//! `[pusher_x, pusher_y, pusher_vx, pusher_vy, object_x, object_y, object_angle, object_vx, object_vy,
//! object_angvel, goal_x, goal_y, goal_angle]`: velocities in units/s and rad/s, angles in `(-pi, pi]`. The
//! object pose is the pose of the manipulated body's frame (each task module says where that frame is), its
//! velocity that of the body's centre of mass during the last physics sub-step, and the goal pose the
//! target pose of the same frame.
//!
//! # Observation
//! A square RGB frame of [`EnvConfig::image_size`] pixels (default 64), rendered anti-aliased straight at that
//! size. Table warm white, walls grey, the pusher royal blue, and per task its own colours and shapes, so
//! tasks stay distinguishable at 32x32.
//!
//! # Rewards and success
//! Every task has a sparse success criterion (reported in [`Info::success`](crate::Info)) and a dense
//! shaped reward in `[0, 1]` that is 1 exactly when the task is solved (push-t: gym-pusht's
//! `clip(coverage / 0.95, 0, 1)`; the others: `1` on success, else `0.8 * progress`). Episodes have a fixed
//! length and do not end on success unless [`EnvConfig::terminate_on_success`] is set. An initial state is
//! never successful.
//!
//! # Tasks
//! [`push_t`], [`push_block`], [`turn_lever`], [`slide_handle`].

pub mod canvas;
pub mod control;
pub mod geom;
pub mod push_block;
pub mod push_t;
pub mod slide_handle;
pub mod turn_lever;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rapier2d::prelude::*;

use crate::{check_action, ActionSpec, Env, EnvConfig, EnvError, Info, Obs, RewardKind, Step};
use canvas::{Canvas, PUSHER};
use geom::V2;

/// Suite name.
pub const SUITE: &str = "tabletop";
/// Side of the square arena in arena units.
pub const ARENA: f32 = 512.0;
/// Arena units to physics units.
pub const SIM: f32 = 0.01;
/// Physics time step (s).
pub const DT: f32 = 0.01;
/// Physics sub-steps per control step.
pub const SUBSTEPS: usize = 10;
/// PD stiffness of the pusher (1/s^2).
pub const KP: f32 = 100.0;
/// PD damping of the pusher (1/s).
pub const KV: f32 = 20.0;
/// Radius of the pusher disc.
pub const PUSHER_RADIUS: f32 = 20.0;
/// Displacement of the PD target per unit of action (arena units).
pub const ACTION_SCALE: f32 = 50.0;
/// Length of the state vector.
pub const STATE_DIM: usize = 13;

/// The action space shared by the suite.
pub fn action_spec() -> ActionSpec {
    ActionSpec {
        dim: 2,
        low: vec![-1.0; 2],
        high: vec![1.0; 2],
        meaning: vec![
            format!("x displacement of the pusher's PD target from the pusher, times {ACTION_SCALE} arena units (arena 512 wide, +x right)"),
            format!("y displacement of the pusher's PD target from the pusher, times {ACTION_SCALE} arena units (+y down)"),
        ],
    }
}

/// Static description of a task.
#[derive(Clone, Copy, Debug)]
pub struct TaskDef {
    /// Registry name.
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Default episode length.
    pub max_steps: usize,
}

/// Reward and success of a state.
#[derive(Clone, Copy, Debug)]
pub struct Eval {
    /// Dense reward in `[0, 1]`, 1 when solved.
    pub reward: f32,
    /// Sparse success criterion.
    pub success: bool,
}

impl Eval {
    /// The convention of most tasks: 1 on success, else `0.8 * progress`.
    pub fn from_progress(progress: f32, success: bool) -> Self {
        Self {
            reward: if success {
                1.0
            } else {
                0.8 * progress.clamp(0.0, 1.0)
            },
            success,
        }
    }
}

/// The physics world of one episode: walls, the pusher and the task's bodies.
pub struct Scene {
    /// The rapier world (physics units).
    pub world: PhysicsWorld,
    /// The fixed body holding walls (and joint anchors).
    pub ground: RigidBodyHandle,
    /// The kinematic pusher.
    pub pusher: RigidBodyHandle,
}

/// Arena units to physics units.
pub fn to_sim(v: V2) -> Vector {
    v * SIM
}

impl Scene {
    /// Walls and the pusher at `pusher` (arena units).
    pub fn new(pusher: V2) -> Self {
        let mut world = PhysicsWorld {
            gravity: Vector::ZERO,
            ..PhysicsWorld::default()
        };
        world.integration_parameters.dt = DT;
        world.integration_parameters.num_solver_iterations = 4;
        let ground = world.bodies.insert(RigidBodyBuilder::fixed());
        let (lo, hi) = (5.0, 506.0);
        for (a, b) in [
            ((lo, hi), (lo, lo)),
            ((lo, lo), (hi, lo)),
            ((hi, lo), (hi, hi)),
            ((lo, hi), (hi, hi)),
        ] {
            let c = ColliderBuilder::capsule_from_endpoints(
                to_sim(V2::new(a.0, a.1)),
                to_sim(V2::new(b.0, b.1)),
                2.0 * SIM,
            )
            .friction(0.0);
            world
                .colliders
                .insert_with_parent(c, ground, &mut world.bodies);
        }
        let pusher = world
            .bodies
            .insert(RigidBodyBuilder::kinematic_velocity_based().translation(to_sim(pusher)));
        world.colliders.insert_with_parent(
            ColliderBuilder::ball(PUSHER_RADIUS * SIM).friction(0.0),
            pusher,
            &mut world.bodies,
        );
        Self {
            world,
            ground,
            pusher,
        }
    }

    /// Position of a body's frame (arena units) and its angle.
    pub fn pose(&self, h: RigidBodyHandle) -> (V2, f32) {
        let b = &self.world.bodies[h];
        (b.translation() / SIM, b.rotation().angle())
    }

    /// Pusher position (arena units).
    pub fn pusher_pos(&self) -> V2 {
        self.world.bodies[self.pusher].translation() / SIM
    }

    /// Pusher velocity (arena units / s).
    pub fn pusher_vel(&self) -> V2 {
        self.world.bodies[self.pusher].linvel() / SIM
    }

    /// Zeroes a body's velocity (pymunk `damping = 0`: bodies only move while pushed).
    pub fn freeze(&mut self, h: RigidBodyHandle) {
        let b = &mut self.world.bodies[h];
        b.set_linvel(Vector::ZERO, false);
        b.set_angvel(0.0, false);
    }
}

/// A task of the suite: how to build an episode, judge it and draw it.
pub trait Task: Sized + Send + 'static {
    /// Name, description, episode length.
    const DEF: TaskDef;
    /// Samples an episode from `rng` and builds its physics world (pusher included).
    fn build(rng: &mut ChaCha8Rng) -> (Scene, Self);
    /// Called before every physics sub-step (e.g. to zero velocities of quasi-static bodies).
    fn before_substep(&self, _scene: &mut Scene) {}
    /// Called after every physics sub-step (e.g. to enforce a constraint exactly).
    fn after_substep(&self, _scene: &mut Scene) {}
    /// Whether the task's bodies stay put during the next sub-step unless touched (quasi-static bodies after
    /// [`Task::before_substep`]) and a pusher at `p` is farther than `margin` from all of them. The
    /// environment then moves the pusher itself instead of running the physics sub-step, which gives the same
    /// result (nothing can collide) at a fraction of the cost. The default, `false`, always simulates.
    fn at_rest_and_clear(&self, _scene: &Scene, _p: V2, _margin: f32) -> bool {
        false
    }
    /// The manipulated body.
    fn object(&self) -> RigidBodyHandle;
    /// Pose of the manipulated body's frame `(x, y, angle)`.
    fn object_pose(&self, scene: &Scene) -> [f32; 3] {
        let (p, th) = scene.pose(self.object());
        [p.x, p.y, th]
    }
    /// Goal pose in the same frame as [`Task::object_pose`].
    fn goal_pose(&self) -> [f32; 3];
    /// Reward and success of the current state.
    fn evaluate(&self, scene: &Scene) -> Eval;
    /// Draws what does not move during the episode (goal, rails, hinges).
    fn draw_static(&self, c: &mut Canvas);
    /// Draws the moving bodies except the pusher.
    fn draw_dynamic(&self, scene: &Scene, c: &mut Canvas);
}

/// A tabletop environment for task `T`.
pub struct TabletopEnv<T: Task> {
    cfg: EnvConfig,
    spec: ActionSpec,
    max_steps: usize,
    scene: Scene,
    task: T,
    canvas: Canvas,
    steps: usize,
    over: bool,
}

impl<T: Task> TabletopEnv<T> {
    /// A new environment, reset with seed 0.
    pub fn new(cfg: &EnvConfig) -> Result<Self, EnvError> {
        cfg.validate()?;
        if cfg.render != crate::RenderOptions::default() {
            return Err(EnvError::Config(format!(
                "the tabletop suite has one renderer and one camera, but {} was asked for; render quality and camera apply to Meta-World",
                cfg.render.describe()
            )));
        }
        let (scene, task) = T::build(&mut ChaCha8Rng::seed_from_u64(0));
        let mut env = Self {
            cfg: cfg.clone(),
            spec: action_spec(),
            max_steps: cfg.max_steps.unwrap_or(T::DEF.max_steps),
            scene,
            task,
            canvas: Canvas::new(cfg.image_size),
            steps: 0,
            over: false,
        };
        env.reset(0);
        Ok(env)
    }

    /// The physics scene (for tests and tools).
    pub fn scene(&self) -> &Scene {
        &self.scene
    }

    /// The task instance of the current episode.
    pub fn task_state(&self) -> &T {
        &self.task
    }

    /// Reward and success of the current state.
    pub fn evaluate(&self) -> Eval {
        self.task.evaluate(&self.scene)
    }

    fn state(&self) -> Vec<f32> {
        let p = self.scene.pusher_pos();
        let v = self.scene.pusher_vel();
        let o = self.task.object_pose(&self.scene);
        let body = &self.scene.world.bodies[self.task.object()];
        let ov = body.linvel() / SIM;
        let ow = body.angvel();
        let g = self.task.goal_pose();
        vec![
            p.x,
            p.y,
            v.x,
            v.y,
            o[0],
            o[1],
            geom::wrap_angle(o[2]),
            ov.x,
            ov.y,
            ow,
            g[0],
            g[1],
            geom::wrap_angle(g[2]),
        ]
    }

    fn observe(&mut self) -> Obs {
        self.canvas.restore_background();
        self.task.draw_dynamic(&self.scene, &mut self.canvas);
        self.canvas
            .fill_circle(self.scene.pusher_pos(), PUSHER_RADIUS, PUSHER);
        Obs {
            frame: self.canvas.rgb(),
            size: self.canvas.size(),
            state: self.state(),
        }
    }
}

impl<T: Task> Env for TabletopEnv<T> {
    fn task(&self) -> &str {
        T::DEF.name
    }

    fn suite(&self) -> &str {
        SUITE
    }

    fn action_spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn max_steps(&self) -> usize {
        self.max_steps
    }

    fn state_dim(&self) -> usize {
        STATE_DIM
    }

    fn image_size(&self) -> usize {
        self.canvas.size()
    }

    fn reset(&mut self, seed: u64) -> Obs {
        let (scene, task) = T::build(&mut ChaCha8Rng::seed_from_u64(seed));
        self.scene = scene;
        self.task = task;
        self.steps = 0;
        self.over = false;
        self.canvas.clear_table();
        self.task.draw_static(&mut self.canvas);
        self.canvas.save_background();
        self.observe()
    }

    fn step(&mut self, action: &[f32]) -> Result<Step, EnvError> {
        let a = check_action(T::DEF.name, &self.spec, action)?;
        if self.over {
            return Err(EnvError::EpisodeOver {
                task: T::DEF.name.to_string(),
                steps: self.steps,
            });
        }
        let lo = PUSHER_RADIUS;
        let hi = ARENA - PUSHER_RADIUS;
        let p = self.scene.pusher_pos();
        let target = V2::new(
            (p.x + ACTION_SCALE * a[0]).clamp(lo, hi),
            (p.y + ACTION_SCALE * a[1]).clamp(lo, hi),
        );
        for _ in 0..SUBSTEPS {
            let p = self.scene.pusher_pos();
            let v = self.scene.pusher_vel();
            let acc = (target - p) * KP - v * KV;
            let v = v + acc * DT;
            self.task.before_substep(&mut self.scene);
            let margin = PUSHER_RADIUS + v.length() * DT + 2.0;
            let body = &mut self.scene.world.bodies[self.scene.pusher];
            body.set_linvel(v * SIM, true);
            if self.task.at_rest_and_clear(&self.scene, p, margin) {
                // Nothing can touch the pusher during this sub-step: integrate the kinematic pusher directly.
                let body = &mut self.scene.world.bodies[self.scene.pusher];
                body.set_translation((p + v * DT) * SIM, false);
            } else {
                self.scene.world.step();
                self.task.after_substep(&mut self.scene);
            }
        }
        self.steps += 1;
        let ev = self.task.evaluate(&self.scene);
        let reward = match self.cfg.reward {
            RewardKind::Dense => ev.reward,
            RewardKind::Sparse => f32::from(u8::from(ev.success)),
        };
        let terminated = self.cfg.terminate_on_success && ev.success;
        let truncated = self.steps >= self.max_steps;
        self.over = terminated || truncated;
        Ok(Step {
            obs: self.observe(),
            reward,
            terminated,
            truncated,
            info: Info {
                success: ev.success,
            },
        })
    }
}

/// Samples a pusher start uniformly in `[lo, hi]^2` that keeps `clearance` from every polygon.
pub fn sample_pusher(
    rng: &mut ChaCha8Rng,
    lo: f32,
    hi: f32,
    clearance: f32,
    polys: &[&[V2]],
) -> V2 {
    use rand::Rng;
    let mut p = V2::new(rng.gen_range(lo..hi), rng.gen_range(lo..hi));
    for _ in 0..1000 {
        if polys
            .iter()
            .all(|poly| geom::point_poly_dist(p, poly) > clearance)
        {
            break;
        }
        p = V2::new(rng.gen_range(lo..hi), rng.gen_range(lo..hi));
    }
    p
}
