#!/usr/bin/env python3
"""Side-by-side speed of Meta-World environments with frames: metaworld 3.1.1 in Python vs world4rl in Rust.

Both step one environment on one thread with uniform random actions, render a SIZE x SIZE RGB frame from the
`corner` camera after every step, and reset at the end of every 500-step episode; both use the same cheap
render settings (no shadows, no MSAA: `vis.quality.shadowsize = 0`, `vis.quality.offsamples = 0`), with
--quality fast also no planar reflections (`mat_reflectance[:] = 0`), or with --quality full Meta-World's own
(shadows, 4x MSAA) on both sides. Python runs in third_party/.venv-mw
(metaworld 3.1.1 on MuJoCo 3.17.0, created on first use; --python-mujoco 3.3.0 uses metaworld's own pin in
third_party/.venv-mw330 instead); Rust runs `w4rl_envs::measure::bench` (the code of
`world4rl env bench`) through the ignored test `crates/envs/tests/metaworld_bench.rs` (built once, release),
or through a
`world4rl` binary built with the `mujoco` feature (--rust-bin). For each task the Python and Rust runs
alternate for --rounds rounds, so that both see the same machine load; the table reports medians.

    python3 scripts/metaworld/bench.py [--tasks coffee-pull,soccer] [--steps 500] [--rounds 3] [--size 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mwref  # noqa: E402

# --python-mujoco 3.3.0: metaworld as published (its own mujoco pin) instead of the 3.17.0 the Rust side links
_argv = sys.argv[1:]
_mj = _argv[_argv.index("--python-mujoco") + 1] if "--python-mujoco" in _argv[:-1] else mwref.MUJOCO_VERSION
mwref.ensure_venv(_mj)
os.environ.setdefault("MUJOCO_GL", "egl")
mwref.patch_metaworld_for_mujoco_317()

import numpy as np  # noqa: E402
import metaworld  # noqa: E402


def python_bench(task: str, steps: int, size: int, quality: str) -> dict:
    name = f"{task}-v3"
    mt1 = metaworld.MT1(name, seed=0)
    if size == 0:  # simulation alone
        env = mt1.train_classes[name]()
    else:
        env = mt1.train_classes[name](render_mode="rgb_array", width=size, height=size, camera_name="corner")
    if quality in ("cheap", "fast") and size > 0:
        env.model.vis.quality.offsamples = 0
        env.model.vis.quality.shadowsize = 0
    if quality == "fast" and size > 0:
        env.model.mat_reflectance[:] = 0.0
    rng = np.random.default_rng(0)
    episode = 0
    env.set_task(mt1.train_tasks[episode % len(mt1.train_tasks)])
    env.reset()
    frame = env.render() if size > 0 else None  # the GL context is made outside the timed loop, as in Rust
    resets = 1
    t0 = time.perf_counter()
    for _ in range(steps):
        a = rng.uniform(-1.0, 1.0, size=4).astype(np.float32)
        _obs, _r, term, trunc, _info = env.step(a)
        if size > 0:
            frame = env.render()
        if term or trunc:
            episode += 1
            env.set_task(mt1.train_tasks[episode % len(mt1.train_tasks)])
            env.reset()
            resets += 1
    seconds = time.perf_counter() - t0
    assert size == 0 or frame.shape == (size, size, 3)
    env.close()
    return {"steps": steps, "resets": resets, "steps_per_sec": steps / seconds, "seconds": seconds}


def rust_env(quality: str) -> dict:
    env = dict(os.environ, MW_BENCH_RENDER=quality)
    mjenv = mwref.ROOT / "third_party" / "mujoco.env"
    for line in mjenv.read_text().splitlines() if mjenv.exists() else []:
        if line.startswith("export "):
            k, v = line[len("export "):].split("=", 1)
            env.setdefault(k, v.strip('"'))
    return env


def build_rust_bench(env: dict) -> str:
    """Builds the ignored bench test once (release) and returns its executable."""
    cmd = ["cargo", "test", "--release", "-p", "w4rl-envs", "--features", "mujoco", "--test", "metaworld_bench",
           "--no-run", "--message-format=json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=mwref.ROOT)
    exe = None
    for line in out.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "metaworld_bench":
            exe = msg.get("executable") or exe
    if out.returncode != 0 or not exe:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return exe


def rust_bench(task: str, steps: int, size: int, env: dict, exe: str | None, rust_bin: str | None) -> dict:
    if rust_bin:
        cmd = [rust_bin, "env", "bench", f"metaworld/{task}", "--size", str(size), "--steps", str(steps), "--json"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=mwref.ROOT)
        if out.returncode != 0:
            sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    env = dict(env, MW_BENCH_TASKS=task, MW_BENCH_STEPS=str(steps), MW_BENCH_SIZE=str(size))
    cmd = [exe, "--ignored", "--nocapture", "metaworld_bench"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=mwref.ROOT / "crates" / "envs")
    lines = [l for l in out.stdout.splitlines() if l.startswith("MW_BENCH ")]
    if out.returncode != 0 or not lines:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("MW_BENCH "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(mwref.TASKS))
    ap.add_argument("--steps", type=int, default=500, help="steps per run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating Python/Rust runs per task")
    ap.add_argument("--size", type=int, default=64, help="frame side; 0 times the simulation alone")
    ap.add_argument("--quality", choices=["cheap", "fast", "full"], default="cheap")
    ap.add_argument("--python-mujoco", default=mwref.MUJOCO_VERSION,
                    help=f"mujoco of the Python side: {mwref.MUJOCO_VERSION} (default) or 3.3.0 (metaworld's pin)")
    ap.add_argument("--rust-bin", default=None, help="a world4rl binary built with --features mujoco")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()
    env = rust_env(args.quality)
    exe = None if args.rust_bin else build_rust_bench(env)
    rows = []
    print(f"{'task':<14} {'python steps/s':>15} {'rust steps/s':>13} {'rust/python':>12}", flush=True)
    for task in args.tasks.split(","):
        runs = []
        for _ in range(args.rounds):
            py = python_bench(task, args.steps, args.size, args.quality)
            rs = rust_bench(task, args.steps, args.size, env, exe, args.rust_bin)
            runs.append((py["steps_per_sec"], rs["steps_per_sec"]))
        py_med = float(np.median([r[0] for r in runs]))
        rs_med = float(np.median([r[1] for r in runs]))
        ratio = float(np.median([r[1] / r[0] for r in runs]))
        rows.append({"task": task, "python_steps_per_sec": py_med, "rust_steps_per_sec": rs_med, "ratio": ratio,
                     "runs": [{"python": p, "rust": r} for p, r in runs]})
        print(f"{task:<14} {py_med:>15.1f} {rs_med:>13.1f} {ratio:>11.2f}x", flush=True)
    summary = {
        "size": args.size,
        "steps": args.steps,
        "rounds": args.rounds,
        "quality": args.quality,
        "versions": mwref.versions(),
        "tasks": rows,
        "min_ratio": min(r["ratio"] for r in rows),
        "geomean_ratio": float(np.exp(np.mean([np.log(r["ratio"]) for r in rows]))),
    }
    print(f"min ratio {summary['min_ratio']:.2f}x, geometric mean {summary['geomean_ratio']:.2f}x")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
