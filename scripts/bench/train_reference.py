"""PyTorch reference of world4rl's world-model training step, for scripts/bench/training.sh (#41).

One optimisation step of the diffusion world model, written the way a DIAMOND-style PyTorch code
base does it (eager, CPU, f32): the actions two-hot encoded, a noise level per sample drawn as
exp(N(-0.4, 1.2^2)) clipped to [0.002, 20], the next frame noised (plus offset noise 0.3 per
channel), the EDM-preconditioned U-Net's raw output regressed onto its target
(next - c_skip * noisy) / c_out with a mean squared error, backward, gradient clipping at norm 1 and
AdamW (lr 1e-4, weight decay 1e-2). The networks are imagine_reference.py's, so both presets have
world4rl's parameter counts (`cpu`: the demo's 32 px world model; `wm64`: 64 px).

This is one denoiser pass per step, what `examples/wm_bench` times; the demo's stage takes two by its
recipe (`world_model.autoregressive_steps = 1`, docs/speed.md).

Environment: PRESET (cpu|wm64, default cpu), BATCH (16), THREADS (2), STEPS (10), WARM (2).
Prints `TRAIN median X ms` and, last, one JSON line.
"""

import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imagine_reference as ref  # noqa: E402  (the same networks as the imagination reference)

SIGMA_LOC, SIGMA_SCALE = -0.4, 1.2
SIGMA_MIN, SIGMA_MAX = 2e-3, 20.0
LR, WEIGHT_DECAY, CLIP = 1e-4, 1e-2, 1.0


def train_step(denoiser, opt, context, actions, nxt):
    """Eq. 7 of DIAMOND / World4RL for one batch; returns the loss."""
    b = nxt.shape[0]
    sigma = (torch.randn(b) * SIGMA_SCALE + SIGMA_LOC).exp().clamp(SIGMA_MIN, SIGMA_MAX)
    noise = torch.randn_like(nxt) * sigma.view(-1, 1, 1, 1)
    noise = noise + ref.SIGMA_OFFSET * torch.randn(b, ref.IMAGE_CHANNELS, 1, 1)
    noisy = nxt + noise
    s = (sigma.square() + ref.SIGMA_OFFSET**2).sqrt()
    denom = s.square() + ref.SIGMA_DATA**2
    c_in = denom.rsqrt().view(-1, 1, 1, 1)
    c_skip = (ref.SIGMA_DATA**2 / denom).view(-1, 1, 1, 1)
    c_out = s.view(-1, 1, 1, 1) * c_skip.sqrt()
    c_noise = s.log() / 4
    ctx = context.flatten(1, 2) / ref.SIGMA_DATA
    out = denoiser.inner(noisy * c_in, c_noise, ctx, ref.two_hot(actions))
    target = (nxt - c_skip * noisy) / c_out
    loss = F.mse_loss(out, target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(denoiser.parameters(), CLIP)
    opt.step()
    return loss


def main():
    torch.set_num_threads(int(os.environ.get("THREADS", 2)))
    torch.set_num_interop_threads(1)
    preset = os.environ.get("PRESET", "cpu")
    if preset not in ref.PRESETS:
        raise SystemExit(f"unknown PRESET {preset!r} (expected cpu or wm64)")
    p = ref.PRESETS[preset]
    b = int(os.environ.get("BATCH", 16))
    steps, warm = int(os.environ.get("STEPS", 10)), int(os.environ.get("WARM", 2))
    if steps < 1:
        raise SystemExit("STEPS must be at least 1")
    size = p["image_size"]
    torch.manual_seed(0)
    denoiser = ref.Denoiser(p).train()
    opt = torch.optim.AdamW(denoiser.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    context = torch.rand(b, ref.CONTEXT, ref.IMAGE_CHANNELS, size, size) * 2 - 1
    actions = torch.rand(b, ref.CONTEXT, ref.ACTION_DIM) * 2 - 1
    nxt = torch.rand(b, ref.IMAGE_CHANNELS, size, size) * 2 - 1
    times = []
    for i in range(warm + steps):
        t0 = time.perf_counter()
        loss = train_step(denoiser, opt, context, actions, nxt)
        float(loss.detach())
        if i >= warm:
            times.append((time.perf_counter() - t0) * 1e3)
    med = statistics.median(times)
    print(f"TRAIN median {med:.1f} ms  min {min(times):.1f}")
    print(
        json.dumps(
            {
                "bench": "train",
                "side": "pytorch",
                "torch": torch.__version__,
                "preset": preset,
                "image_size": size,
                "batch": b,
                "threads": torch.get_num_threads(),
                "steps": steps,
                "warmup": warm,
                "params": ref.count(denoiser),
                "train_step_ms_median": med,
                "train_step_ms_min": min(times),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
