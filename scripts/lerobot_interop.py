"""The Python side of world4rl's LeRobot interop tests (run with the project's .venv, lerobot 0.4.x).

  make OUT DUMP.json   writes a small LeRobot v3.0 dataset with lerobot's own writer
                       (LeRobotDataset.create): an image camera (32x32, PNG in the parquet), a video camera
                       (64x64, AV1 mp4), a state, an action, next.reward, next.success, two tasks; then loads
                       it back offline and dumps every frame as lerobot decodes it.
  load DIR DUMP.json   loads a LeRobot dataset (world4rl's export) offline with LeRobotDataset and dumps
                       every frame.

A dump is one JSON object of per-frame lists in dataset order: `episode_index`, `frame_index`, `task`, the
float features as lists, and each camera as uint8 HWC (`round(255 * x)` of lerobot's float CHW tensor).
Nothing is fetched from a hub (HF_HUB_OFFLINE=1).
"""

import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
# keep the datasets cache out of the user's home, and remove it afterwards
if "HF_HOME" not in os.environ:
    _hf_home = tempfile.mkdtemp(prefix="w4rl-hf-")
    os.environ["HF_HOME"] = _hf_home
    atexit.register(shutil.rmtree, _hf_home, True)

import numpy as np  # noqa: E402

# numpy >= 2.4 refuses float() of a 1-element array; lerobot 0.4.4 stores shape-(1,) features as
# scalar `datasets.Value` columns and hands each row's (1,) array to `Value.encode_example`, which then
# fails. Unwrapping size-1 arrays is what numpy < 2.4 did, so the files written are unchanged.
import datasets.features.features as hf_features  # noqa: E402

_encode = hf_features.Value.encode_example


def _encode_unwrapped(self, value):
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    return _encode(self, value)


hf_features.Value.encode_example = _encode_unwrapped

from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

FPS = 10
TASKS = ["pick the red cube", "push the blue ball"]
# (task, length): two episodes per task so that BC keeps a held-out demo per task
EPISODES = [(0, 10), (1, 12), (0, 9), (1, 11)]


def frame(ep, t, side, salt):
    """A frame whose colours say which episode and step it is (and differ across cameras)."""
    y, x = np.mgrid[0:side, 0:side]
    img = np.zeros((side, side, 3), dtype=np.uint8)
    img[..., 0] = (t * 20 + salt) % 256
    img[..., 1] = (x * 255 // max(side - 1, 1)).astype(np.uint8)
    img[..., 2] = ((ep * 60 + y * 3) % 256).astype(np.uint8)
    # a bright square that moves with t, so consecutive frames differ in shape too
    c = (t * 3) % (side - 6)
    img[c : c + 6, c : c + 6] = 255
    return img


def make(out):
    features = {
        "observation.images.top": {
            "dtype": "image",
            "shape": (32, 32, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.images.wrist": {
            "dtype": "video",
            "shape": (64, 64, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.state": {"dtype": "float32", "shape": (4,), "names": ["s0", "s1", "s2", "s3"]},
        "action": {"dtype": "float32", "shape": (3,), "names": ["a0", "a1", "a2"]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.success": {"dtype": "bool", "shape": (1,), "names": None},
    }
    ds = LeRobotDataset.create(
        repo_id="world4rl/interop",
        fps=FPS,
        features=features,
        root=out,
        robot_type="toy",
        use_videos=True,
        video_backend="torchcodec",
    )
    rng = np.random.default_rng(7)
    for ep, (task, n) in enumerate(EPISODES):
        for t in range(n):
            # success only at the last step of episodes 0 and 1; reward = success + noise
            ok = t == n - 1 and ep < 2
            ds.add_frame(
                {
                    "observation.images.top": frame(ep, t, 32, 0),
                    "observation.images.wrist": frame(ep, t, 64, 100),
                    "observation.state": rng.standard_normal(4).astype(np.float32),
                    "action": rng.uniform(-1.0, 1.0, 3).astype(np.float32),
                    "next.reward": np.array([float(ok) + 0.1 * rng.random()], dtype=np.float32),
                    "next.success": np.array([ok], dtype=bool),
                    "task": TASKS[task],
                }
            )
        ds.save_episode()
    ds.finalize()


def as_u8(img):
    """lerobot's float CHW in [0, 1] as uint8 HWC."""
    a = img.numpy()
    return np.rint(a * 255.0).clip(0, 255).astype(np.uint8).transpose(1, 2, 0).tolist()


def dump(root, path):
    ds = LeRobotDataset("world4rl/interop", root=root, video_backend="torchcodec")
    cameras = list(ds.meta.camera_keys)
    out = {"fps": ds.fps, "num_episodes": ds.num_episodes, "cameras": cameras}
    cols = {}
    for i in range(len(ds)):
        item = ds[i]
        for k, v in item.items():
            if k in cameras:
                val = as_u8(v)
            elif k == "task":
                val = v
            elif hasattr(v, "numpy"):
                val = v.numpy().tolist()
            else:
                continue
            cols.setdefault(k, []).append(val)
    out.update(cols)
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(path)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("make", "load"):
        sys.exit(__doc__)
    mode, root, path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if mode == "make":
        make(root)
    dump(root, path)


if __name__ == "__main__":
    main()
