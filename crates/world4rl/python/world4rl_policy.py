"""A world4rl Gaussian policy in plain PyTorch.

This file is written next to `config.json` and `model.safetensors` by `world4rl export policy`. It needs
only `torch`: no world4rl, no LeRobot, no safetensors package. It rebuilds the network from
`config.json`, loads the weights, and reproduces world4rl's preprocessing, so `select_action` returns the
mean action world4rl itself would take (within float rounding):

    from world4rl_policy import World4RLPolicy
    policy = World4RLPolicy.from_pretrained("exported/push-block")
    action = policy.select_action({"observation.image": frames})   # [B, action_dim], env units

Frames are `uint8` `[B, H, W, 3]` or `[B, 3, H, W]` at `config["render_size"]` pixels (floats in [0, 1],
LeRobot's convention, are accepted too); they are reduced to the policy's size by area averaging and
rounded to 8 bits, as world4rl does. With `frame_stack > 1` the policy keeps the last frames of each row
between calls, like LeRobot's policies: call `reset()` at every episode start.
"""

import json
import os
import struct
from collections import deque

import torch
import torch.nn.functional as F

_DTYPES = {
    "F32": torch.float32,
    "F64": torch.float64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def load_safetensors(path):
    """Reads every tensor of a safetensors file (little-endian, as written on x86 and ARM)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its header length)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: truncated safetensors header")
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if base + end > len(data):
            raise ValueError(f"{path}: tensor '{name}' runs past the end of the file (truncated?)")
        dtype = _DTYPES[info["dtype"]]
        if end > start:
            t = torch.frombuffer(bytearray(data[base + start : base + end]), dtype=dtype)
        else:
            t = torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def resize_u8(x, out):
    """`uint8 [N, 3, S, S]` -> `uint8 [N, 3, out, out]`: area averaging when shrinking (an exact box
    filter for integer factors), bilinear when growing, rounded back to 8 bits (world4rl's resize)."""
    size = x.shape[-1]
    if size == out:
        return x
    f = x.float()
    if size > out and size % out == 0:
        k = size // out
        r = F.avg_pool2d(f, k, k, 0, False, True)
    elif size > out:
        r = F.adaptive_avg_pool2d(f, (out, out))
    else:
        r = F.interpolate(f, size=(out, out), mode="bilinear", align_corners=False)
    return r.round().clamp(0, 255).to(torch.uint8)


def spatial_softmax(h):
    """Expected (x, y) in [-1, 1] of each channel's softmax over positions: `[N, C, H, W]` -> `[N, 2C]`."""
    n, c, hh, ww = h.shape
    p = torch.softmax(h.reshape(n, c, hh * ww), -1).reshape(n, c, hh, ww)
    xs = torch.linspace(-1.0, 1.0, ww).view(1, 1, 1, ww)
    ys = torch.linspace(-1.0, 1.0, hh).view(1, 1, hh, 1)
    return torch.cat([(p * xs).sum((2, 3)), (p * ys).sum((2, 3))], 1)


class Encoder(torch.nn.Module):
    """3x3 convolutions with ReLU, then spatial softmax or average pooling, then linear + ReLU."""

    def __init__(self, in_channels, cfg):
        super().__init__()
        self.n = len(cfg["channels"])
        c_in = in_channels
        for i, (c, s) in enumerate(zip(cfg["channels"], cfg["strides"])):
            setattr(self, f"conv{i}", torch.nn.Conv2d(c_in, c, 3, stride=s, padding=1))
            c_in = c
        self.spatial = cfg["spatial_softmax"]
        self.pool = cfg["pool"]
        flat = 2 * c_in if self.spatial else c_in * self.pool * self.pool
        self.fc = torch.nn.Linear(flat, cfg["features"])

    def forward(self, x):
        for i in range(self.n):
            x = torch.relu(getattr(self, f"conv{i}")(x))
        if self.spatial:
            x = spatial_softmax(x)
        else:
            x = F.adaptive_avg_pool2d(x, (self.pool, self.pool)).flatten(1)
        return torch.relu(self.fc(x))


class World4RLPolicy(torch.nn.Module):
    """π(a | x) = N(μ(x), σ(x)²) of World4RL; `select_action` returns the mean in environment units."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.frame_stack = int(config["frame_stack"])
        self.image_size = int(config["image_size"])
        self.use_image = bool(config["use_image"])
        self.use_state = bool(config["use_state"])
        state_dim = int(config["state_dim"]) if self.use_state else 0
        features = 0
        if self.use_image:
            self.encoder = Encoder(3 * self.frame_stack, config["encoder"])
            features = config["encoder"]["features"]
        hidden = int(config["hidden"])
        action_dim = len(config["action_low"])
        self.fc1 = torch.nn.Linear(features + state_dim, hidden)
        self.fc2 = torch.nn.Linear(hidden, hidden)
        self.mean = torch.nn.Linear(hidden, action_dim)
        self.log_std = torch.nn.Linear(hidden, action_dim)
        # a policy refined as a residual on its frozen start: mean + scale * tanh(out(relu(fc(h))))
        self.residual_scale = None
        if config.get("residual"):
            self.residual_scale = float(config["residual"]["scale"])
            self.residual = torch.nn.Module()
            self.residual.fc = torch.nn.Linear(hidden, hidden)
            self.residual.out = torch.nn.Linear(hidden, action_dim)
        self.register_buffer("state_mean", torch.zeros(max(state_dim, 1)))
        self.register_buffer("state_std", torch.ones(max(state_dim, 1)))
        self.action_low = torch.tensor(config["action_low"], dtype=torch.float32)
        self.action_high = torch.tensor(config["action_high"], dtype=torch.float32)
        self.log_std_bounds = [float(v) for v in torch.tensor(config["std_bounds"]).log()]
        self._frames = None

    @classmethod
    def from_pretrained(cls, path):
        """Loads a folder written by `world4rl export policy`."""
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        if config.get("type") != "world4rl_gaussian":
            raise ValueError(f"{path}/config.json is not a world4rl policy (type {config.get('type')!r})")
        policy = cls(config)
        policy.load_state_dict(load_safetensors(os.path.join(path, "model.safetensors")), strict=True)
        return policy.eval()

    def reset(self):
        """Forgets the frame history (call it at every episode start)."""
        self._frames = None

    def preprocess(self, image):
        """Frames as world4rl feeds them: `uint8 [B, 3, s, s]` at the policy's size."""
        x = torch.as_tensor(image)
        if x.dtype != torch.uint8:
            x = (x.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.shape[1] != 3 and x.shape[-1] == 3:
            x = x.permute(0, 3, 1, 2)
        if x.shape[1] != 3 or x.shape[2] != x.shape[3]:
            raise ValueError(f"expected square RGB frames, got shape {tuple(x.shape)}")
        return resize_u8(x.contiguous(), self.image_size)

    def forward(self, frames, state=None):
        """μ and clamped log σ in the normalised action box from `uint8 [B, 3k, s, s]` stacked frames
        (oldest first) and the raw state `[B, S]`."""
        parts = []
        if self.use_image:
            parts.append(self.encoder(frames.float() / 127.5 - 1.0))
        if self.use_state:
            parts.append((torch.as_tensor(state).float() - self.state_mean) / self.state_std)
        h = torch.relu(self.fc2(torch.relu(self.fc1(torch.cat(parts, 1)))))
        mean = torch.tanh(self.mean(h))
        if self.residual_scale is not None:
            r = self.residual.out(torch.relu(self.residual.fc(h)))
            mean = mean + self.residual_scale * torch.tanh(r)
        log_std = self.log_std(h).clamp(*self.log_std_bounds)
        return mean, log_std

    @torch.no_grad()
    def select_action(self, batch):
        """The mean action `[B, action_dim]` in environment units for a LeRobot-style batch with
        `observation.image` and/or `observation.state`."""
        frames = None
        if self.use_image:
            x = self.preprocess(batch["observation.image"])
            if self._frames is None or self._frames[0].shape != x.shape:
                self._frames = deque([x] * self.frame_stack, maxlen=self.frame_stack)
            else:
                self._frames.append(x)
            frames = torch.cat(list(self._frames), 1)
        state = batch.get("observation.state") if self.use_state else None
        mean, _ = self.forward(frames, state)
        a = mean.clamp(-1.0, 1.0)
        return self.action_low + (a + 1.0) * 0.5 * (self.action_high - self.action_low)
