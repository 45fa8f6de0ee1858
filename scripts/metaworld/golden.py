#!/usr/bin/env python3
"""Writes the Meta-World parity golden files for the Rust tests (crates/envs/tests/metaworld_parity.rs).

Runs metaworld 3.1.1 on MuJoCo 3.17.0 (the library the Rust side links; metaworld patched for its 12 weld
slots, see mwref.py) in third_party/.venv-mw, which it creates when missing. For each of the eight tasks it
records two episodes of MT1(task, seed=0):
  - "expert": train task 0, actions from metaworld's scripted policy, until 3 steps after the first success
    (at most --expert-steps steps), so that success flags of both values are compared;
  - "random": train task 1, 50 uniform actions in [-1, 1] from numpy's default_rng(1234).
Each episode stores the task vector (`rand_vec`, exact decimal strings, replayed by the Rust env), the float32
actions, the reset observation, and the observation, reward and success flag after every step. Observations
and rewards are rounded to 1e-7 (the Rust test compares with tolerance 1e-3). Each file also holds the
FRAME x FRAME RGB frame of the "expert" episode's reset state from the `corner` camera with the cheap render
settings (no shadows, no MSAA), turned upright (Meta-World's corner view is upside down), as hex. Run once; the
outputs are committed:

    python3 scripts/metaworld/golden.py [--out crates/envs/tests/golden/metaworld] [--steps 50] [--expert-steps 250]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mwref  # noqa: E402

mwref.ensure_venv()
os.environ.setdefault("MUJOCO_GL", "egl")
mwref.patch_metaworld_for_mujoco_317()

import numpy as np  # noqa: E402
import metaworld  # noqa: E402
from metaworld.policies import ENV_POLICY_MAP  # noqa: E402


def r7(x) -> float:
    return round(float(x), 7)


def run_episode(env, task, actions_fn, steps: int, until_success: int | None = None) -> dict:
    """Runs `steps` steps; with `until_success`, stops that many steps after the first success instead."""
    env.set_task(task)
    rand_vec = pickle.loads(task.data)["rand_vec"]
    obs, _ = env.reset()
    ep = {
        # as decimal strings (Python's shortest round-trip repr), parsed exactly by Rust's str::parse; JSON number
        # parsers may be 1 ulp off, which contact-rich scenes amplify
        "rand_vec": [repr(float(v)) for v in rand_vec],
        "reset_obs": [r7(v) for v in obs],
        "actions": [],
        "obs": [],
        "reward": [],
        "success": [],
    }
    for t in range(steps):
        a = np.asarray(actions_fn(obs, t), dtype=np.float32)
        obs, reward, _term, _trunc, info = env.step(a)
        ep["actions"].append([float(v) for v in a])  # exact float32 values
        ep["obs"].append([r7(v) for v in obs])
        ep["reward"].append(r7(reward))
        ep["success"].append(int(info["success"] > 0.5))
        if until_success is not None and sum(ep["success"]) > until_success:
            break
    return ep


def reset_frame(name: str, task, size: int) -> dict:
    """The upright frame of the reset state of `task`, cheap render settings."""
    env = metaworld.MT1(name, seed=0).train_classes[name](
        render_mode="rgb_array", width=size, height=size, camera_name="corner"
    )
    env.model.vis.quality.offsamples = 0
    env.model.vis.quality.shadowsize = 0
    env.set_task(task)
    env.reset()
    frame = np.ascontiguousarray(np.flipud(env.render()))
    env.close()
    return {"size": size, "camera": "corner", "quality": "cheap", "rgb_hex": frame.tobytes().hex()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(mwref.ROOT / "crates/envs/tests/golden/metaworld"))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--expert-steps", type=int, default=250)
    ap.add_argument("--frame", type=int, default=32, help="side of the stored reset frame")
    ap.add_argument("--tasks", default=",".join(mwref.TASKS))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        name = f"{task}-v3"
        mt1 = metaworld.MT1(name, seed=0)
        env = mt1.train_classes[name]()
        policy = ENV_POLICY_MAP[name]()
        rng = np.random.default_rng(1234)
        random_actions = rng.uniform(-1.0, 1.0, size=(args.steps, 4)).astype(np.float32)
        episodes = {
            "expert": run_episode(env, mt1.train_tasks[0], lambda o, t: policy.get_action(o), args.expert_steps, 3),
            "random": run_episode(env, mt1.train_tasks[1], lambda o, t: random_actions[t], args.steps),
        }
        env.close()
        doc = {
            "generator": "scripts/metaworld/golden.py",
            "versions": mwref.versions(),
            "task": task,
            "mt1_seed": 0,
            "episodes": [dict(name=k, **v) for k, v in episodes.items()],
            "reset_frame": reset_frame(name, mt1.train_tasks[0], args.frame),
        }
        path = out / f"{task}.json"
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        succ = {k: (len(v["success"]), int(any(v["success"]))) for k, v in episodes.items()}
        print(f"{task}: wrote {path} ({path.stat().st_size} bytes), (steps, success): {succ}")


if __name__ == "__main__":
    main()
