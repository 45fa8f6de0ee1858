#!/usr/bin/env python3
"""Where the imagined push-block goes: the block's position in open-loop imagined frames against the real one.

Usage: .venv/bin/python scripts/push_block_drift.py RUN [--out DIR] [--bin BIN] [-- DREAM_ARGS...]

For each held-out push-block rollout of RUN (RUN/heldout/episodes/push-block/), `world4rl dream
--frames-out` replays the recorded actions open loop in RUN's world model and writes the real and
imagined frames (kept in DIR, default RUN/drift/push-block; files already there are reused). The block
is then located in every frame, real and imagined, as the centroid of its colour: each pixel is unmixed
into the known background (table, goal square and its outline, drawn from the goal's recorded
position) plus shares of the block's and the pusher's colours, and the block's share weighs the pixel.
On real frames this estimate is checked against the recorded state (block centre, state[4:6]).

Prints, for the held-out rollouts:
  * the estimator's error on real frames (it must be far below the drift it measures);
  * the imagined block's distance from the real one after 1, 5, 10, 15, 25, 35 and 50 steps (median, IQR);
  * the ROC AUC, against the real outcome, of the block's smallest distance to the goal, read from the
    real frames and from the imagined ones: what a perfect classifier could get from each;
  * how far the real outcomes are from flipping: each rollout's best corner excursion beyond the goal
    square (negative inside), from the recorded states, in pixels.
Needs numpy and safetensors (scripts/setup.sh installs both into .venv).
"""
import argparse
import glob
import os
import subprocess
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

# facts of the tabletop suite (crates/envs/src/tabletop/{canvas.rs,push_block.rs}, mod.rs ARENA)
ARENA = 512.0
HALF = 34.0  # half side of the block
ZONE_HALF = 72.0  # half side of the goal square
EDGE_HALF_WIDTH = 2.5  # the goal square's outline is 5 units wide
TABLE = np.array([242, 240, 234.0])
ZONE = np.array([250, 226, 130.0])
EDGE = np.array([205, 165, 40.0])
BLOCK = np.array([235, 120, 30.0])
PUSHER = np.array([65, 105, 225.0])


def cover(lo, hi, n):
    """Per pixel of a row of n, the length of [lo, hi] inside it (pixels)."""
    i = np.arange(n)[:, None] + np.array([0.0, 1.0])[None, :]
    return np.clip(np.minimum(i[:, 1], hi) - np.maximum(i[:, 0], lo), 0, 1)


def square(g, h, n):
    return cover(g[1] - h, g[1] + h, n)[:, None] * cover(g[0] - h, g[0] + h, n)[None, :]


def background(goal_px, n, k):
    outer = square(goal_px, (ZONE_HALF + EDGE_HALF_WIDTH) / k, n)[..., None]
    inner = square(goal_px, (ZONE_HALF - EDGE_HALF_WIDTH) / k, n)[..., None]
    return TABLE * (1 - outer) + ZONE * inner + EDGE * (outer - inner)


def block_centres(frames, goal_px):
    """Block centre (x, y) in pixels of each frame [T, S, S, 3]."""
    n = frames.shape[1]
    k = ARENA / n
    bg = background(goal_px, n, k)
    d = frames.astype(float) - bg
    a = np.stack([BLOCK - bg, PUSHER - bg], -1)  # S, S, 3, 2
    ata = np.einsum("yxci,yxcj->yxij", a, a)
    atd = np.einsum("yxci,tyxc->tyxi", a, d)
    share = np.einsum("yxij,tyxj->tyxi", np.linalg.inv(ata), atd)[..., 0]
    w = np.clip(share, 0, 1)
    w = np.where(w < 0.15, 0, w)  # sampling noise of imagined frames
    w[..., 0, :] = w[..., -1, :] = w[..., :, 0] = w[..., :, -1] = 0  # the walls
    ys, xs = np.mgrid[0:n, 0:n] + 0.5
    m = np.maximum(w.sum((-1, -2)), 1e-6)
    return np.stack([(w * xs).sum((-1, -2)) / m, (w * ys).sum((-1, -2)) / m], -1)


def corner_excursion(states):
    """Per frame: how far the block's farthest corner is outside the goal square (arena units)."""
    c, th, g = states[:, 4:6], states[:, 6], states[:, 10:12]
    sq = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * HALF
    rot = np.stack([np.stack([np.cos(th), -np.sin(th)], -1), np.stack([np.sin(th), np.cos(th)], -1)], -2)
    corners = c[:, None, :] + np.einsum("tij,kj->tki", rot, sq)
    return np.abs(corners - g[:, None, :]).max(-1).max(-1) - ZONE_HALF


def auc(score, label):
    pos, neg = score[label], score[~label]
    return (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()


def auc_interval(score, label, n=1000, seed=0):
    rng = np.random.default_rng(seed)
    v = []
    for _ in range(n):
        i = rng.integers(0, len(label), len(label))
        if label[i].all() or not label[i].any():
            continue
        v.append(auc(score[i], label[i]))
    return np.quantile(v, [0.025, 0.975])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--out", help="frames folder (default RUN/drift/push-block)")
    p.add_argument("--bin", default="target/release/world4rl")
    p.add_argument("dream_args", nargs="*", help="passed to `world4rl dream` (after --)")
    a = p.parse_args()
    held = os.path.join(a.run, "heldout", "episodes", "push-block")
    files = sorted(glob.glob(os.path.join(held, "*.safetensors")))
    if not files:
        sys.exit(f"no held-out push-block rollouts in {held}")
    out = a.out or os.path.join(a.run, "drift", "push-block")
    os.makedirs(out, exist_ok=True)
    for i, f in enumerate(files):
        dst = os.path.join(out, os.path.basename(f))
        if os.path.exists(dst):
            continue
        print(f"\rdreaming {i + 1}/{len(files)}", end="", file=sys.stderr, flush=True)
        subprocess.run(
            [a.bin, "--threads", "2", "dream", "--run", a.run, "--data", os.path.join(a.run, "dataset"),
             "--episode-file", f, "--out", dst[: -len(".safetensors")] + ".gif", "--frames-out", dst,
             *a.dream_args],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(file=sys.stderr)

    calib, drift, rows = [], [], []
    for f in files:
        ep = load_file(f)
        fr = load_file(os.path.join(out, os.path.basename(f)))
        with safe_open(os.path.join(out, os.path.basename(f)), "np") as h:
            steps = int(h.metadata()["steps"])
        n = fr["real"].shape[1]
        k = ARENA / n
        st = ep["states"][: steps + 1]
        goal = st[0, 10:12] / k
        real, fake = block_centres(fr["real"], goal), block_centres(fr["imagined"], goal)
        calib.append(np.linalg.norm(real - st[:, 4:6] / k, axis=-1))
        drift.append(np.linalg.norm(fake - real, axis=-1))
        rows.append((ep["success"].max() == 1,
                     np.linalg.norm(real - goal, axis=-1).min(),
                     np.linalg.norm(fake - goal, axis=-1).min(),
                     corner_excursion(st).min() / k))
    calib = np.concatenate(calib)
    drift = np.array(drift)
    y = np.array([r[0] for r in rows])
    print(f"{len(rows)} held-out push-block rollouts of {a.run}, real success {100 * y.mean():.0f} %, {n}x{n} frames")
    print(f"block estimate on the real frames against the recorded state: median error {np.median(calib):.3f} px, "
          f"95th percentile {np.quantile(calib, 0.95):.3f} px")
    print("imagined block's distance from the real one (px), median [IQR]:")
    for t in (1, 5, 10, 15, 25, 35, 50):
        if t < drift.shape[1]:
            q = np.quantile(drift[:, t], [0.25, 0.5, 0.75])
            print(f"  step {t:2d}: {q[1]:.2f} [{q[0]:.2f}, {q[2]:.2f}]")
    for col, name in ((1, "real frames"), (2, "imagined frames")):
        s = -np.array([r[col] for r in rows])
        lo, hi = auc_interval(s, y)
        print(f"AUC of the block's smallest distance to the goal, {name}: {auc(s, y):.2f} [{lo:.2f}, {hi:.2f}]")
    exc = np.array([r[3] for r in rows])
    fail, succ = exc[~y], exc[y]
    if len(fail):
        print(f"failures: best corner excursion median {np.median(fail):.2f} px; "
              f"{100 * (fail < 1).mean():.0f} % missed by less than 1 px")
    if len(succ):
        print(f"successes: deepest corner inside by median {-np.median(succ):.2f} px; "
              f"{100 * (succ > -1).mean():.0f} % within 1 px of failing")


if __name__ == "__main__":
    main()
