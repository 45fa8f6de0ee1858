#!/usr/bin/env python3
"""Reference computations (plain PyTorch) of the backbones behind LPIPS, FID and FVD, used by
crates/world4rl/tests/metrics_reference.rs to check the Rust ports on random weights.

The networks follow the public implementations the weight files come from:
  * LPIPS v0.1, AlexNet (package `lpips`: ScalingLayer, alexnet slices, NetLinLayer, spatial average);
  * FID Inception-v3 (package `pytorch-fid`: FIDInceptionA/C/E_1/E_2, 299x299 bilinear resize);
  * I3D (repository piergiaj/pytorch-i3d: InceptionI3d with TF-SAME padding, logits averaged over time).

Usage: metrics_reference.py WEIGHTS.safetensors INPUTS.safetensors OUTPUT.safetensors KIND
  KIND = lpips | fid | fvd
  INPUTS holds `a`, `b` ([N,3,H,W] in [-1,1]) for lpips, `x` ([N,3,H,W]) for fid, `x` ([N,T,3,H,W]) for fvd.
  OUTPUT receives `out` (lpips: [N] distances; fid: [N,2048] features; fvd: [N,400] features).
"""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def conv(x, w, p, name, stride=1, padding=0):
    b = p.get(name + ".bias")
    return F.conv2d(x, p[name + ".weight"], b, stride=stride, padding=padding)


# ---------------------------------------------------------------- LPIPS
def lpips(p, a, b):
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(x):
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        x = (x - shift) / scale
        out = []
        h = F.relu(conv(x, None, p, "net.slice1.0", stride=4, padding=2)); out.append(h)
        h = F.relu(conv(F.max_pool2d(h, 3, 2), None, p, "net.slice2.3", padding=2)); out.append(h)
        h = F.relu(conv(F.max_pool2d(h, 3, 2), None, p, "net.slice3.6", padding=1)); out.append(h)
        h = F.relu(conv(h, None, p, "net.slice4.8", padding=1)); out.append(h)
        h = F.relu(conv(h, None, p, "net.slice5.10", padding=1)); out.append(h)
        return out

    def normalize(f, eps=1e-10):
        return f / (torch.sqrt(torch.sum(f ** 2, dim=1, keepdim=True)) + eps)

    fa, fb = feats(a), feats(b)
    total = 0
    for i, (x, y) in enumerate(zip(fa, fb)):
        d = (normalize(x) - normalize(y)) ** 2
        total = total + F.conv2d(d, p[f"lin{i}.model.1.weight"]).mean(dim=[2, 3], keepdim=True)
    return total.view(-1)


# ---------------------------------------------------------------- FID Inception
def basic(x, p, name, stride=1, padding=0):
    x = F.conv2d(x, p[name + ".conv.weight"], None, stride=stride, padding=padding)
    x = F.batch_norm(x, p[name + ".bn.running_mean"], p[name + ".bn.running_var"],
                     p[name + ".bn.weight"], p[name + ".bn.bias"], False, 0.0, 0.001)
    return F.relu(x)


def inc_a(x, p, n):
    b1 = basic(x, p, n + ".branch1x1")
    b5 = basic(basic(x, p, n + ".branch5x5_1"), p, n + ".branch5x5_2", padding=2)
    b3 = basic(basic(basic(x, p, n + ".branch3x3dbl_1"), p, n + ".branch3x3dbl_2", padding=1), p, n + ".branch3x3dbl_3", padding=1)
    bp = basic(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), p, n + ".branch_pool")
    return torch.cat([b1, b5, b3, bp], 1)


def inc_b(x, p, n):
    b3 = basic(x, p, n + ".branch3x3", stride=2)
    d = basic(basic(basic(x, p, n + ".branch3x3dbl_1"), p, n + ".branch3x3dbl_2", padding=1), p, n + ".branch3x3dbl_3", stride=2)
    return torch.cat([b3, d, F.max_pool2d(x, 3, 2)], 1)


def inc_c(x, p, n):
    b1 = basic(x, p, n + ".branch1x1")
    b7 = basic(x, p, n + ".branch7x7_1")
    b7 = basic(b7, p, n + ".branch7x7_2", padding=(0, 3))
    b7 = basic(b7, p, n + ".branch7x7_3", padding=(3, 0))
    d = basic(x, p, n + ".branch7x7dbl_1")
    d = basic(d, p, n + ".branch7x7dbl_2", padding=(3, 0))
    d = basic(d, p, n + ".branch7x7dbl_3", padding=(0, 3))
    d = basic(d, p, n + ".branch7x7dbl_4", padding=(3, 0))
    d = basic(d, p, n + ".branch7x7dbl_5", padding=(0, 3))
    bp = basic(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), p, n + ".branch_pool")
    return torch.cat([b1, b7, d, bp], 1)


def inc_d(x, p, n):
    b3 = basic(basic(x, p, n + ".branch3x3_1"), p, n + ".branch3x3_2", stride=2)
    b7 = basic(x, p, n + ".branch7x7x3_1")
    b7 = basic(b7, p, n + ".branch7x7x3_2", padding=(0, 3))
    b7 = basic(b7, p, n + ".branch7x7x3_3", padding=(3, 0))
    b7 = basic(b7, p, n + ".branch7x7x3_4", stride=2)
    return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


def inc_e(x, p, n, max_pool):
    b1 = basic(x, p, n + ".branch1x1")
    b3 = basic(x, p, n + ".branch3x3_1")
    b3 = torch.cat([basic(b3, p, n + ".branch3x3_2a", padding=(0, 1)), basic(b3, p, n + ".branch3x3_2b", padding=(1, 0))], 1)
    d = basic(basic(x, p, n + ".branch3x3dbl_1"), p, n + ".branch3x3dbl_2", padding=1)
    d = torch.cat([basic(d, p, n + ".branch3x3dbl_3a", padding=(0, 1)), basic(d, p, n + ".branch3x3dbl_3b", padding=(1, 0))], 1)
    pool = F.max_pool2d(x, 3, 1, 1) if max_pool else F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return torch.cat([b1, b3, d, basic(pool, p, n + ".branch_pool")], 1)


def fid_features(p, x):
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    x = basic(x, p, "Conv2d_1a_3x3", stride=2)
    x = basic(x, p, "Conv2d_2a_3x3")
    x = basic(x, p, "Conv2d_2b_3x3", padding=1)
    x = F.max_pool2d(x, 3, 2)
    x = basic(x, p, "Conv2d_3b_1x1")
    x = basic(x, p, "Conv2d_4a_3x3")
    x = F.max_pool2d(x, 3, 2)
    x = inc_a(x, p, "Mixed_5b"); x = inc_a(x, p, "Mixed_5c"); x = inc_a(x, p, "Mixed_5d")
    x = inc_b(x, p, "Mixed_6a")
    for n in ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]:
        x = inc_c(x, p, n)
    x = inc_d(x, p, "Mixed_7a")
    x = inc_e(x, p, "Mixed_7b", False)
    x = inc_e(x, p, "Mixed_7c", True)
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


# ---------------------------------------------------------------- I3D
def same_pad(x, k, s):
    pads = []
    for dim, (kk, ss) in enumerate(zip(k, s)):
        size = x.shape[2 + dim]
        pad = max(kk - ss, 0) if size % ss == 0 else max(kk - size % ss, 0)
        pads.append((pad // 2, pad - pad // 2))
    (t0, t1), (h0, h1), (w0, w1) = pads
    return F.pad(x, (w0, w1, h0, h1, t0, t1))


def unit3d(x, p, n, k=(1, 1, 1), s=(1, 1, 1), bn=True):
    x = F.conv3d(same_pad(x, k, s), p[n + ".conv3d.weight"], p.get(n + ".conv3d.bias"), stride=s)
    if bn:
        x = F.batch_norm(x, p[n + ".bn.running_mean"], p[n + ".bn.running_var"], p[n + ".bn.weight"], p[n + ".bn.bias"], False, 0.0, 0.001)
        x = F.relu(x)
    return x


def max3d(x, k, s):
    return F.max_pool3d(same_pad(x, k, s), k, s)


def mixed(x, p, n):
    b0 = unit3d(x, p, n + ".b0")
    b1 = unit3d(unit3d(x, p, n + ".b1a"), p, n + ".b1b", (3, 3, 3))
    b2 = unit3d(unit3d(x, p, n + ".b2a"), p, n + ".b2b", (3, 3, 3))
    b3 = unit3d(max3d(x, (3, 3, 3), (1, 1, 1)), p, n + ".b3b")
    return torch.cat([b0, b1, b2, b3], 1)


def i3d_features(p, clips):
    n, t = clips.shape[:2]
    if t < 9:
        clips = torch.cat([clips, clips[:, -1:].repeat(1, 9 - t, 1, 1, 1)], 1)
        t = 9
    x = F.interpolate(clips.flatten(0, 1), size=(224, 224), mode="bilinear", align_corners=False)
    x = x.view(n, t, 3, 224, 224).permute(0, 2, 1, 3, 4)
    x = unit3d(x, p, "Conv3d_1a_7x7", (7, 7, 7), (2, 2, 2))
    x = max3d(x, (1, 3, 3), (1, 2, 2))
    x = unit3d(x, p, "Conv3d_2b_1x1")
    x = unit3d(x, p, "Conv3d_2c_3x3", (3, 3, 3))
    x = max3d(x, (1, 3, 3), (1, 2, 2))
    x = mixed(x, p, "Mixed_3b"); x = mixed(x, p, "Mixed_3c")
    x = max3d(x, (3, 3, 3), (2, 2, 2))
    for m in ["Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"]:
        x = mixed(x, p, m)
    x = max3d(x, (2, 2, 2), (2, 2, 2))
    x = mixed(x, p, "Mixed_5b"); x = mixed(x, p, "Mixed_5c")
    x = F.avg_pool3d(x, (2, 7, 7), (1, 1, 1))
    x = unit3d(x, p, "logits", bn=False)
    return x.mean(dim=[2, 3, 4])


def main():
    weights, inputs, output, kind = sys.argv[1:5]
    torch.set_num_threads(1)
    p = load_file(weights)
    x = load_file(inputs)
    with torch.no_grad():
        if kind == "lpips":
            out = lpips(p, x["a"], x["b"])
        elif kind == "fid":
            out = fid_features(p, x["x"])
        elif kind == "fvd":
            out = i3d_features(p, x["x"])
        else:
            raise SystemExit(f"unknown kind {kind}")
    save_file({"out": out.contiguous()}, output)


if __name__ == "__main__":
    main()
