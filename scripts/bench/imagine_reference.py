"""PyTorch reference of world4rl's imagination step, for scripts/bench/imagination.sh (issue #41).

One step of imagination for a batch of imagined environments, written the way a DIAMOND-style
PyTorch code base does it (eager, CPU, f32, no compilation): the rolling context buffers (frames,
actions, padding mask) stay tensors; the Gaussian policy acts on the newest frame; the actions are
two-hot encoded; an EDM-preconditioned U-Net denoiser samples the next frame with Euler steps; the
frame is clamped and quantised to 8 bits; the success classifier judges it; the buffers roll.

Every shape mirrors world4rl (crates/world4rl/src/models/{unet,blocks}.rs, diffusion/{denoiser,
sampler}.rs, world_model/action_encoding.rs, policy/{encoder,trunk,gaussian}.rs,
reward/classifier.rs), so both sides have the same parameter count (printed by both):

* PRESET=cpu: 32 px frames, channels [32,32,64,64], depth 1, attention at the 4x4 level, cond 256
  (2,038,211 world-model parameters with 2-D actions);
* PRESET=wm64: 64 px frames, channels [32,64,64,128], depth 2, no level attention, cond 256
  (5,744,547 parameters).

Both use 4 context frames, two-hot actions (21 bins per dimension), sigma_data 0.5, offset noise 0.3
folded into the preconditioning, and 2 Euler steps on the EDM schedule (sigma 5 -> 0.002 -> 0, rho
7). The policy (221,956 parameters) and the classifier (105,985) read 32 px frames.

Environment: PRESET (cpu|wm64, default cpu), BATCH (32), THREADS (2), STEPS (20), WARM (3).
Prints `IMAGINE median X ms` and, last, one JSON line.
"""

import json
import math
import os
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "cpu": dict(
        image_size=32,
        channels=[32, 32, 64, 64],
        depths=[1, 1, 1, 1],
        attention=[False, False, False, True],
        cond=256,
    ),
    "wm64": dict(
        image_size=64,
        channels=[32, 64, 64, 128],
        depths=[2, 2, 2, 2],
        attention=[False, False, False, False],
        cond=256,
    ),
}
CONTEXT = 4  # L
IMAGE_CHANNELS = 3
ACTION_DIM = 2  # the tabletop suite
ACTION_LOW, ACTION_HIGH = -1.0, 1.0
BINS = 21  # two-hot K
SIGMA_DATA = 0.5
SIGMA_OFFSET = 0.3
SAMPLER_STEPS = 2
SAMPLER_SIGMA_MIN, SAMPLER_SIGMA_MAX, SAMPLER_RHO = 2e-3, 5.0, 7.0
GROUP_SIZE = 32
GN_EPS = 1e-5
HEAD_DIM = 8
POLICY_SIZE = 32  # frames the policy and the classifier read
THRESHOLD = 0.5
STD_MIN, STD_MAX, STD_INIT = 0.02, 1.0, 0.3


def groups(c):
    return max(1, c // GROUP_SIZE)


def zero_(module):
    nn.init.zeros_(module.weight)
    nn.init.zeros_(module.bias)
    return module


# --------------------------------------------------------------------------------------------------
# The denoiser's U-Net


class AdaGN(nn.Module):
    """GroupNorm without affine parameters, then x * (1 + scale) + shift from the conditioning."""

    def __init__(self, c, cond):
        super().__init__()
        self.g = groups(c)
        self.proj = nn.Linear(cond, 2 * c)

    def forward(self, x, cond):
        x = F.group_norm(x, self.g, eps=GN_EPS)
        scale, shift = self.proj(cond)[:, :, None, None].chunk(2, dim=1)
        return x * (scale + 1) + shift


class Attention(nn.Module):
    """Multi-head self-attention over positions: GroupNorm, 1x1 qkv, softmax attention, 1x1 out."""

    def __init__(self, c):
        super().__init__()
        self.heads = max(1, c // HEAD_DIM)
        self.norm = nn.GroupNorm(groups(c), c, eps=GN_EPS)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = zero_(nn.Conv2d(c, c, 1))

    def forward(self, x):
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).view(n, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(3, 4).unbind(1)  # each [n, heads, hw, d]
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(2, 3).reshape(n, c, h, w))


class ResBlock(nn.Module):
    """AdaGN, SiLU, 3x3 conv, AdaGN, SiLU, 3x3 conv (zero init), plus the (projected) input;
    then optional attention."""

    def __init__(self, cin, cout, cond, attention):
        super().__init__()
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.norm1 = AdaGN(cin, cond)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = AdaGN(cout, cond)
        self.conv2 = zero_(nn.Conv2d(cout, cout, 3, padding=1))
        self.attn = Attention(cout) if attention else None

    def forward(self, x, cond):
        h = self.conv1(F.silu(self.norm1(x, cond)))
        h = self.conv2(F.silu(self.norm2(h, cond)))
        y = h + self.skip(x)
        return y if self.attn is None else self.attn(y)


class Down(nn.Module):
    """3x3 stride-2 convolution, orthogonal init."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)
        nn.init.orthogonal_(self.conv.weight)

    def forward(self, x):
        return self.conv(x)


class Up(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Per level: a Down (not at level 0) and `depth` blocks; a middle of two blocks with attention;
    per level on the way up: an Up (not at the deepest level) and `depth + 1` blocks, each fed the
    current activation concatenated with one of the level's skips (its outputs, newest first, then
    its input)."""

    def __init__(self, channels, depths, attention, cond):
        super().__init__()
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i, (c2, depth, attn) in enumerate(zip(channels, depths, attention)):
            c1 = channels[max(0, i - 1)]
            self.downs.append(Down(c1) if i > 0 else nn.Identity())
            self.ups.append(Up(c1) if i > 0 else nn.Identity())
            self.down.append(
                nn.ModuleList(ResBlock(c1 if j == 0 else c2, c2, cond, attn) for j in range(depth))
            )
            self.up.append(
                nn.ModuleList(
                    ResBlock(2 * c2, c2, cond, attn)
                    if j < depth
                    else ResBlock(c1 + c2, c1, cond, attn)
                    for j in range(depth + 1)
                )
            )
        c = channels[-1]
        self.mid = nn.ModuleList([ResBlock(c, c, cond, True), ResBlock(c, c, cond, True)])
        self.levels = len(channels)

    def forward(self, x, cond):
        skips = []
        for i in range(self.levels):
            x = self.downs[i](x)
            s = [x]
            for block in self.down[i]:
                x = block(x, cond)
                s.append(x)
            skips.append(s)
        for block in self.mid:
            x = block(x, cond)
        for i in reversed(range(self.levels)):
            if i + 1 < self.levels:
                x = self.ups[i + 1](x)
            s = skips[i]
            for j, block in enumerate(self.up[i]):
                x = block(torch.cat([x, s[len(s) - 1 - j]], dim=1), cond)
        return x


class InnerModel(nn.Module):
    """F_theta: the conditioning (Fourier features of c_noise + a bias-free linear embedding of each
    step's encoded action, flattened over the L steps, through Linear-SiLU-Linear), conv_in over the
    L context frames and the noisy frame stacked on channels, the U-Net, GroupNorm-SiLU-conv_out."""

    def __init__(self, p):
        super().__init__()
        cond, c0 = p["cond"], p["channels"][0]
        self.register_buffer("fourier", torch.randn(1, cond // 2))  # fixed, not trained
        self.act_emb = nn.Linear(ACTION_DIM * BINS, cond // CONTEXT, bias=False)
        self.cond_proj1 = nn.Linear(cond, cond)
        self.cond_proj2 = nn.Linear(cond, cond)
        self.conv_in = nn.Conv2d((CONTEXT + 1) * IMAGE_CHANNELS, c0, 3, padding=1)
        self.unet = UNet(p["channels"], p["depths"], p["attention"], cond)
        self.norm_out = nn.GroupNorm(groups(c0), c0, eps=GN_EPS)
        self.conv_out = zero_(nn.Conv2d(c0, IMAGE_CHANNELS, 3, padding=1))
        self.multiple = 2 ** (len(p["channels"]) - 1)

    def forward(self, noisy, c_noise, context, actions):
        f = (c_noise[:, None] @ self.fourier) * (2 * math.pi)
        emb = torch.cat([f.cos(), f.sin()], dim=1) + self.act_emb(actions).flatten(1)
        cond = self.cond_proj2(F.silu(self.cond_proj1(emb)))
        x = torch.cat([context, noisy], dim=1)
        assert x.shape[-1] % self.multiple == 0 and x.shape[-2] % self.multiple == 0
        x = self.unet(self.conv_in(x), cond)
        return self.conv_out(F.silu(self.norm_out(x)))


class Denoiser(nn.Module):
    """EDM preconditioning around F_theta, with the offset noise folded into the effective level
    s = sqrt(sigma^2 + sigma_offset^2): c_in = 1/sqrt(s^2 + sd^2), c_skip = sd^2/(s^2 + sd^2),
    c_out = s*sd/sqrt(s^2 + sd^2), c_noise = ln(s)/4; the context frames are divided by sd."""

    def __init__(self, p):
        super().__init__()
        self.inner = InnerModel(p)

    def forward(self, noisy, sigma, context, actions):
        s = (sigma.square() + SIGMA_OFFSET**2).sqrt()
        denom = s.square() + SIGMA_DATA**2
        c_in = denom.rsqrt().view(-1, 1, 1, 1)
        c_skip = (SIGMA_DATA**2 / denom).view(-1, 1, 1, 1)
        c_out = s.view(-1, 1, 1, 1) * c_skip.sqrt()
        c_noise = s.log() / 4
        ctx = context.flatten(1, 2) / SIGMA_DATA
        out = self.inner(noisy * c_in, c_noise, ctx, actions)
        return c_skip * noisy + c_out * out


def edm_sigmas(steps, sigma_min, sigma_max, rho):
    """The EDM schedule: sigma_i = (a + i/(N-1) (b - a))^rho for i < N with a = sigma_max^(1/rho),
    b = sigma_min^(1/rho), then sigma_N = 0."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    out = [(a + (i / (steps - 1) if steps > 1 else 0.0) * (b - a)) ** rho for i in range(steps)]
    return out + [0.0]


SIGMAS = edm_sigmas(SAMPLER_STEPS, SAMPLER_SIGMA_MIN, SAMPLER_SIGMA_MAX, SAMPLER_RHO)


def sample_next(denoiser, context, actions, size):
    """Euler steps from sigma_0 * noise; every denoised estimate is clamped to [-1, 1]."""
    b = context.shape[0]
    x = torch.randn(b, IMAGE_CHANNELS, size, size) * SIGMAS[0]
    for s, s_next in zip(SIGMAS[:-1], SIGMAS[1:]):
        den = denoiser(x, torch.full((b,), s), context, actions).clamp(-1, 1)
        x = x + (x - den) / s * (s_next - s)
    return x


def quantize(x):
    """Round frames in [-1, 1] to the 8-bit grid."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def two_hot(a):
    """[..., A] actions -> [..., A*K]: each dimension spread over its two neighbouring bins of
    linspace(-1, 1, K) (computed in f64, as world4rl does)."""
    if not bool(torch.isfinite(a).all()):
        raise ValueError("actions contain NaN or infinite values")
    a = a.double().clamp(ACTION_LOW, ACTION_HIGH)
    u = (a - ACTION_LOW) / (ACTION_HIGH - ACTION_LOW) * (BINS - 1)
    below = u.floor().clamp(0, BINS - 2).long()
    bins = torch.linspace(ACTION_LOW, ACTION_HIGH, BINS, dtype=torch.float64)
    lo, hi = bins[below], bins[below + 1]
    w_hi = (a - lo) / (hi - lo)
    w_lo = (hi - a) / (hi - lo)
    t = F.one_hot(below, BINS).double() * w_lo[..., None]
    t = t + F.one_hot(below + 1, BINS).double() * w_hi[..., None]
    return t.reshape(*a.shape[:-1], a.shape[-1] * BINS).float()


# --------------------------------------------------------------------------------------------------
# The policy side


class ConvEncoder(nn.Module):
    """3x3 convolutions with ReLU, then spatial-softmax keypoints or adaptive average pooling, then
    Linear-ReLU."""

    def __init__(self, cin, channels, strides, spatial_softmax, pool, features, size):
        super().__init__()
        convs = []
        for c, s in zip(channels, strides):
            convs.append(nn.Conv2d(cin, c, 3, stride=s, padding=1))
            cin = c
        self.convs = nn.ModuleList(convs)
        self.spatial_softmax = spatial_softmax
        self.pool = pool
        self.fc = nn.Linear(2 * cin if spatial_softmax else cin * pool * pool, features)
        side = size
        for s in strides:
            side = (side - 1) // s + 1
        self.register_buffer("xs", torch.linspace(-1, 1, side).view(1, 1, 1, side))
        self.register_buffer("ys", torch.linspace(-1, 1, side).view(1, 1, side, 1))

    def forward(self, x):
        for conv in self.convs:
            x = F.relu(conv(x))
        if self.spatial_softmax:
            n, c, h, w = x.shape
            p = x.reshape(n, c, h * w).softmax(-1).view(n, c, h, w)
            flat = torch.cat([(p * self.xs).sum((2, 3)), (p * self.ys).sum((2, 3))], dim=1)
        else:
            flat = F.adaptive_avg_pool2d(x, self.pool).flatten(1)
        return F.relu(self.fc(flat))


class Policy(nn.Module):
    """Gaussian policy: encoder (convs [32,64,64], strides [2,2,1], spatial softmax, 256 features),
    two hidden layers of 256, mu = tanh(Linear), log sigma = Linear clamped to [ln 0.02, ln 1]."""

    def __init__(self):
        super().__init__()
        self.encoder = ConvEncoder(3, [32, 64, 64], [2, 2, 1], True, 4, 256, POLICY_SIZE)
        self.fc1 = nn.Linear(256, 256)
        self.fc2 = nn.Linear(256, 256)
        self.mean = nn.Linear(256, ACTION_DIM)
        self.log_std = nn.Linear(256, ACTION_DIM)
        for head, bias in ((self.mean, 0.0), (self.log_std, math.log(STD_INIT))):
            nn.init.uniform_(head.weight, -1e-3, 1e-3)
            nn.init.constant_(head.bias, bias)

    def forward(self, x):
        h = F.relu(self.fc2(F.relu(self.fc1(self.encoder(x)))))
        return self.mean(h).tanh(), self.log_std(h).clamp(math.log(STD_MIN), math.log(STD_MAX))


class Classifier(nn.Module):
    """Success classifier: encoder (convs [32,64,64], stride 2, global average pooling, 256
    features), a hidden layer of 128, one logit."""

    def __init__(self):
        super().__init__()
        self.encoder = ConvEncoder(3, [32, 64, 64], [2, 2, 2], False, 1, 256, POLICY_SIZE)
        self.fc1 = nn.Linear(256, 128)
        self.fc2 = nn.Linear(128, 1)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(self.encoder(x)))).squeeze(-1)


def policy_input(frames):
    """Model frames [B, 3, S, S] in [-1, 1] -> what the policy side reads: 8-bit pixels, reduced to
    32 px by area averaging and rounded, mapped back to [-1, 1]."""
    px = ((frames.clamp(-1, 1) + 1) * 127.5).round()
    k = frames.shape[-1] // POLICY_SIZE
    if k > 1:
        px = F.avg_pool2d(px, k).round()
    return px / 127.5 - 1


# --------------------------------------------------------------------------------------------------


def count(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def main():
    torch.set_num_threads(int(os.environ.get("THREADS", 2)))
    torch.set_num_interop_threads(1)
    preset = os.environ.get("PRESET", "cpu")
    if preset not in PRESETS:
        raise SystemExit(f"unknown PRESET {preset!r} (expected cpu or wm64)")
    p = PRESETS[preset]
    b = int(os.environ.get("BATCH", 32))
    steps, warm = int(os.environ.get("STEPS", 20)), int(os.environ.get("WARM", 3))
    size = p["image_size"]
    torch.manual_seed(0)
    denoiser, policy, classifier = Denoiser(p).eval(), Policy().eval(), Classifier().eval()
    params = {
        "world_model": count(denoiser),
        "policy": count(policy),
        "classifier": count(classifier),
    }
    print("params " + " ".join(f"{k} {v}" for k, v in params.items()))

    def start_buffers():
        """The rolling context buffers, as DIAMOND's WorldModelEnv keeps them: frames
        [B, L, 3, S, S] on the 8-bit grid, actions [B, L, A] (the last slot receives the action
        chosen at the newest frame), the padding mask [B, L] (start rows have 0-3 padded positions
        before the episode start, zeroed)."""
        mask = torch.arange(CONTEXT)[None, :] >= (torch.arange(b) % CONTEXT)[:, None]
        obs = quantize(torch.rand(b, CONTEXT, IMAGE_CHANNELS, size, size) * 2 - 1)
        act = torch.rand(b, CONTEXT, ACTION_DIM) * 2 - 1
        return obs * mask[:, :, None, None, None], act * mask[:, :, None], mask

    def step(obs, act, mask):
        t0 = time.perf_counter()
        mean, log_std = policy(policy_input(obs[:, -1]))
        a = (mean + log_std.exp() * torch.randn_like(mean)).clamp(-1, 1)
        a = ACTION_LOW + (a + 1) * 0.5 * (ACTION_HIGH - ACTION_LOW)
        t1 = time.perf_counter()
        act[:, -1] = a
        m = mask.float()
        enc = two_hot(act) * m[:, :, None]
        ctx = obs * m[:, :, None, None, None]
        nxt = quantize(sample_next(denoiser, ctx, enc, size))
        t2 = time.perf_counter()
        prob = classifier(policy_input(nxt)).sigmoid()
        reward = (prob > THRESHOLD).float()
        # the rollout's bookkeeping reads rewards and probabilities on the host, as world4rl's does
        _ = (reward.tolist(), prob.tolist())
        t3 = time.perf_counter()
        obs = obs.roll(-1, dims=1)
        obs[:, -1] = nxt
        act = act.roll(-1, dims=1)
        mask = mask.roll(-1, dims=1)
        mask[:, -1] = True
        t4 = time.perf_counter()
        return obs, act, mask, (t4 - t0, t1 - t0, t2 - t1, t3 - t2)

    total, pol, wm, clf = [], [], [], []
    with torch.inference_mode():
        obs, act, mask = start_buffers()
        for i in range(warm + steps):
            obs, act, mask, (tt, tp, tw, tc) = step(obs, act, mask)
            if i >= warm:
                total.append(tt * 1e3)
                pol.append(tp * 1e3)
                wm.append(tw * 1e3)
                clf.append(tc * 1e3)
    med = statistics.median(total)
    print(f"IMAGINE median {med:.1f} ms  min {min(total):.1f}")
    print(
        json.dumps(
            {
                "bench": "imagine",
                "side": "pytorch",
                "torch": torch.__version__,
                "preset": preset,
                "image_size": size,
                "channels": p["channels"],
                "depths": p["depths"],
                "attention": p["attention"],
                "cond_channels": p["cond"],
                "sampler_steps": SAMPLER_STEPS,
                "sigmas": SIGMAS,
                "policy_size": POLICY_SIZE,
                "batch": b,
                "threads": torch.get_num_threads(),
                "steps": steps,
                "warmup": warm,
                "params": params,
                "params_total": sum(params.values()),
                "imagine_step_ms_median": med,
                "imagine_step_ms_min": min(total),
                "policy_ms_median": statistics.median(pol),
                "world_model_ms_median": statistics.median(wm),
                "classifier_ms_median": statistics.median(clf),
                "transitions_per_sec": b * 1e3 / med,
                # the process's peak resident memory (Linux reports ru_maxrss in KiB)
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
