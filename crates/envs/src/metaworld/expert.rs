//! Scripted experts for the Meta-World tasks, after metaworld 3.1.1's scripted policies
//! (`metaworld/policies/sawyer_*_v3_policy.py`): each is a small state machine over the observation that picks
//! a way-point, then `move(hand, way-point, p) = p * (way-point - hand)` (the environment clips to [-1, 1]),
//! plus a gripper effort.

use super::sim::{add3, sub3, vec3, Vec3};

/// `move(from, to, p)`.
fn mv(from: Vec3, to: Vec3, p: f64) -> Vec3 {
    let e = sub3(to, from);
    [p * e[0], p * e[1], p * e[2]]
}

fn dist_xy(a: Vec3, b: Vec3) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// `numpy.isclose(a, b, atol)` with numpy's default `rtol = 1e-5`.
fn isclose(a: f64, b: f64, atol: f64) -> bool {
    (a - b).abs() <= atol + 1e-5 * b.abs()
}

fn action(delta: Vec3, grab: f64) -> [f32; 4] {
    [
        delta[0] as f32,
        delta[1] as f32,
        delta[2] as f32,
        grab as f32,
    ]
}

/// The scripted expert's action for `task` (a name from [`super::TASKS`]) given a 39-D observation.
/// Returns `None` for an unknown task.
pub fn expert_action(task: &str, obs: &[f64; 39]) -> Option<[f32; 4]> {
    let hand = vec3(&obs[..3]);
    let obj = vec3(&obs[4..7]);
    let goal = vec3(&obs[36..39]);
    Some(match task {
        "button-press" => {
            let mut pos = add3(obj, [0.0, 0.0, -0.07]);
            // align in x and z first, then push in y
            if !(isclose(hand[0], pos[0], 0.02) && isclose(hand[2], pos[2], 0.02)) {
                pos[1] = hand[1] - 0.1;
            } else {
                pos[1] += 0.02;
            }
            action(mv(hand, pos, 25.0), 0.0)
        }
        "drawer-open" => {
            let drawer = add3(obj, [0.0, 0.0, -0.02]);
            let delta = if dist_xy(hand, drawer) > 0.06 {
                // above the handle
                mv(hand, add3(drawer, [0.0, 0.0, 0.3]), 4.0)
            } else if (hand[2] - drawer[2]).abs() > 0.04 {
                // down to it
                mv(hand, drawer, 4.0)
            } else {
                // pull towards a point in front of the handle, harder
                mv(hand, add3(drawer, [0.0, -0.06, 0.0]), 50.0)
            };
            action(delta, -1.0)
        }
        "coffee-pull" => {
            let mug = add3(obj, [-0.005, 0.0, 0.05]);
            let to = if dist_xy(hand, mug) > 0.06 {
                add3(mug, [0.0, 0.0, 0.15])
            } else if (hand[2] - mug[2]).abs() > 0.02 {
                mug
            } else {
                goal
            };
            let grip_ref = add3(obj, [0.01, 0.0, 0.05]);
            let grab = if dist_xy(hand, grip_ref) > 0.06 || (hand[2] - grip_ref[2]).abs() > 0.1 {
                -1.0
            } else {
                0.7
            };
            action(mv(hand, to, 10.0), grab)
        }
        "soccer" => action(soccer(hand, obj, goal), 1.0),
        "hammer" => {
            let puck = add3(obj, [-0.04, 0.0, -0.01]);
            let nail_goal = add3([0.24, 0.71, 0.11], [-0.19, 0.0, 0.05]);
            let to = if dist_xy(hand, puck) > 0.04 {
                add3(puck, [0.0, 0.0, 0.1])
            } else if (hand[2] - puck[2]).abs() > 0.05 && puck[2] < 0.03 {
                add3(puck, [0.0, 0.0, 0.03])
            } else if ((hand[0] - nail_goal[0]).powi(2) + (hand[2] - nail_goal[2]).powi(2)).sqrt()
                > 0.02
            {
                [nail_goal[0], hand[1], nail_goal[2]]
            } else {
                nail_goal
            };
            let grab = if dist_xy(hand, puck) > 0.04 || (hand[2] - puck[2]).abs() > 0.1 {
                0.0
            } else {
                0.8
            };
            action(mv(hand, to, 10.0), grab)
        }
        "door-lock" => {
            let lock = add3(obj, [-0.02, -0.02, 0.0]);
            let to = if dist_xy(hand, lock) > 0.02 {
                if hand[2] < 0.25 {
                    add3(hand, [0.0, -0.1, 0.1])
                } else {
                    add3(lock, [0.0, 0.0, 0.3])
                }
            } else if (hand[2] - lock[2]).abs() > 0.02 {
                lock
            } else {
                add3(lock, [-0.1, 0.0, -0.1])
            };
            action(mv(hand, to, 25.0), -1.0)
        }
        "lever-pull" => {
            let lever = add3(obj, [0.0, -0.055, 0.0]);
            let to = if dist_xy(hand, lever) > 0.02 {
                add3(lever, [0.0, 0.0, -0.1])
            } else if (hand[2] - lever[2]).abs() > 0.02 {
                lever
            } else {
                add3(lever, [0.0, 0.08, 0.02])
            };
            action(mv(hand, to, 25.0), 1.0)
        }
        "handle-pull" => {
            let handle = add3(obj, [0.0, -0.04, 0.0]);
            let to = if dist_xy(hand, handle) > 0.02 {
                handle
            } else if (hand[2] - handle[2]).abs() > 0.02 {
                // Meta-World's policy returns the scalar handle height here, which numpy broadcasts to all
                // three axes
                [handle[2]; 3]
            } else {
                add3(handle, [0.0, 0.0, 0.1])
            };
            action(mv(hand, to, 25.0), 1.0)
        }
        _ => return None,
    })
}

/// Soccer. Meta-World's scripted policy pushes the ball along x until it is level with the goal, then along y;
/// its sideways approaches often knock the ball away (0.86-0.92 success over 50 configurations here). This
/// one pushes along the ball-goal line from a point behind the ball, and lifts the closed gripper over the
/// ball when the ball lies on its way to that point.
fn soccer(hand: Vec3, ball: Vec3, goal: Vec3) -> Vec3 {
    const PUSH_Z: f64 = 0.03; // below the mocap bound: the hand goes as low as it can
    const SAFE_Z: f64 = 0.15;
    const BEHIND: f64 = 0.05;
    let (dx, dy) = (goal[0] - ball[0], goal[1] - ball[1]);
    let len = (dx * dx + dy * dy).sqrt().max(1e-9);
    let d = [dx / len, dy / len];
    let behind = [ball[0] - d[0] * BEHIND, ball[1] - d[1] * BEHIND];
    let to_behind = ((hand[0] - behind[0]).powi(2) + (hand[1] - behind[1]).powi(2)).sqrt();
    // distance from the ball to the straight path hand -> behind point, in x-y
    let (sx, sy) = (behind[0] - hand[0], behind[1] - hand[1]);
    let seg2 = sx * sx + sy * sy;
    let u = if seg2 > 0.0 {
        (((ball[0] - hand[0]) * sx + (ball[1] - hand[1]) * sy) / seg2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (px, py) = (hand[0] + u * sx - ball[0], hand[1] + u * sy - ball[1]);
    let blocked = (px * px + py * py).sqrt() < 0.045 && to_behind > 0.015;
    let to = if blocked && hand[2] < 0.1 {
        // lift in place first
        [hand[0], hand[1], SAFE_Z]
    } else if to_behind > 0.015 {
        [behind[0], behind[1], if blocked { SAFE_Z } else { PUSH_Z }]
    } else if hand[2] > 0.08 {
        [behind[0], behind[1], PUSH_Z]
    } else {
        // in line behind the ball and low: push through it towards the goal
        return mv(
            hand,
            [ball[0] + d[0] * BEHIND, ball[1] + d[1] * BEHIND, PUSH_Z],
            10.0,
        );
    };
    mv(hand, to, 25.0)
}
