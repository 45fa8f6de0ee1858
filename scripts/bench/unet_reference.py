# Copied from the framework bake-off spike (../shared/spikes/bakeoff/pytorch/unet.py): the PyTorch
# reference for scripts/bench_world_model.sh. Unchanged apart from this header.
# Reference: DIAMOND-style EDM denoiser U-Net, PyTorch eager, CPU.
# channels [32,64,64,128], 2 res blocks per down level (+3 per up level, the
# 3rd consumes the level-input skip), mid = Res + SelfAttn(8x8) + Res,
# AdaGN conditioning (noise-level Fourier emb + action emb -> MLP).
import math, os, sys, time, statistics
import torch
import torch.nn as nn
import torch.nn.functional as F

B = int(os.environ.get("BATCH", 32))
H = W = 64
IN_CH = 15
OUT_CH = 3
CH = [32, 64, 64, 128]
DEPTH = 2
COND = 256
NOISE_EMB = 64
N_ACT = 16
GROUP_SIZE = 32
HEAD_DIM = 8


def ngroups(c):
    return max(1, c // GROUP_SIZE)


class AdaGN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.g = ngroups(c)
        self.lin = nn.Linear(COND, 2 * c)

    def forward(self, x, cond):
        x = F.group_norm(x, self.g, eps=1e-5)
        scale, shift = self.lin(cond)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


class SelfAttn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh = max(1, c // HEAD_DIM)
        self.norm = AdaGN(c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x, cond):
        n, c, h, w = x.shape
        y = self.norm(x, cond)
        qkv = self.qkv(y).view(n, 3 * self.nh, c // self.nh, h * w).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=1)  # (n, nh, hw, d)
        att = (q @ k.transpose(2, 3)) / math.sqrt(c // self.nh)
        att = att.softmax(dim=-1)
        y = (att @ v).transpose(2, 3).reshape(n, c, h, w)
        return x + self.out(y)


class ResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.n1 = AdaGN(cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.n2 = AdaGN(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x, cond):
        r = x if self.proj is None else self.proj(x)
        x = self.c1(F.silu(self.n1(x, cond)))
        x = self.c2(F.silu(self.n2(x, cond)))
        return x + r


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("freqs", torch.linspace(0.1, 8.0, NOISE_EMB // 2))  # fixed Fourier features
        self.act_emb = nn.Embedding(N_ACT, NOISE_EMB)
        self.cond1 = nn.Linear(NOISE_EMB, COND)
        self.cond2 = nn.Linear(COND, COND)
        self.conv_in = nn.Conv2d(IN_CH, CH[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.dsamp = nn.ModuleList()
        self.up = nn.ModuleList()
        self.usamp = nn.ModuleList()
        for i, c2 in enumerate(CH):
            c1 = CH[max(0, i - 1)]
            self.dsamp.append(nn.Conv2d(c1, c1, 3, stride=2, padding=1) if i > 0 else nn.Identity())
            self.down.append(nn.ModuleList([ResBlock(c1 if j == 0 else c2, c2) for j in range(DEPTH)]))
            ins = [2 * c2] * DEPTH + [c1 + c2]
            outs = [c2] * DEPTH + [c1]
            self.up.append(nn.ModuleList([ResBlock(a, b) for a, b in zip(ins, outs)]))
            self.usamp.append(nn.Conv2d(c1, c1, 3, padding=1) if i > 0 else nn.Identity())
        self.mid1 = ResBlock(CH[-1], CH[-1])
        self.attn = SelfAttn(CH[-1])
        self.mid2 = ResBlock(CH[-1], CH[-1])
        self.norm_out_g = ngroups(CH[0])
        self.conv_out = nn.Conv2d(CH[0], OUT_CH, 3, padding=1)

    def forward(self, x, c_noise, act):
        f = 2 * math.pi * c_noise[:, None] * self.freqs[None]
        emb = torch.cat([f.cos(), f.sin()], dim=-1) + self.act_emb(act)
        cond = self.cond2(F.silu(self.cond1(emb)))
        x = self.conv_in(x)
        skips = []
        for i in range(len(CH)):
            xd = self.dsamp[i](x)
            x = xd
            outs = []
            for blk in self.down[i]:
                x = blk(x, cond)
                outs.append(x)
            skips.append([xd] + outs)
        x = self.mid1(x, cond)
        x = self.attn(x, cond)
        x = self.mid2(x, cond)
        for i in reversed(range(len(CH))):
            cat = skips[i][::-1]
            for j, blk in enumerate(self.up[i]):
                x = blk(torch.cat([x, cat[j]], dim=1), cond)
            if i > 0:
                x = self.usamp[i](F.interpolate(x, scale_factor=2.0, mode="nearest"))
        x = F.silu(F.group_norm(x, self.norm_out_g))
        return self.conv_out(x)


def main():
    torch.set_num_threads(int(os.environ.get("THREADS", 2)))
    torch.manual_seed(0)
    net = UNet()
    nparams = sum(p.numel() for p in net.parameters())
    print(f"params {nparams}")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-2)
    x = torch.randn(B, IN_CH, H, W)
    tgt = torch.randn(B, OUT_CH, H, W)
    cn = torch.randn(B)
    act = torch.randint(0, N_ACT, (B,))
    warm, steps = int(os.environ.get("WARM", 2)), int(os.environ.get("STEPS", 7))

    def train_step():
        out = net(x, cn, act)
        loss = F.mse_loss(out, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    ts = []
    for s in range(warm + steps):
        t0 = time.perf_counter()
        l = train_step()
        dt = time.perf_counter() - t0
        if s >= warm:
            ts.append(dt)
        print(f"train step {s} {dt*1e3:.1f} ms loss {l:.4f}", flush=True)
    print(f"TRAIN median {statistics.median(ts)*1e3:.1f} ms  min {min(ts)*1e3:.1f}")
    ti = []
    with torch.inference_mode():
        for s in range(warm + steps):
            t0 = time.perf_counter()
            out = net(x, cn, act)
            _ = out.sum().item()
            dt = time.perf_counter() - t0
            if s >= warm:
                ti.append(dt)
    print(f"INFER median {statistics.median(ti)*1e3:.1f} ms  min {min(ti)*1e3:.1f}")


if __name__ == "__main__":
    main()
