"""Shared helpers for the Python Meta-World reference scripts (golden.py, bench.py).

- `ensure_venv()` creates `third_party/.venv-mw` (git-ignored) with metaworld==3.1.1 and then replaces its
  mujoco (3.3.0, pinned by metaworld) by mujoco==3.17.0, the version the Rust side links, and re-executes the
  calling script inside that venv. Idempotent: an existing venv with the right versions is reused.
  `ensure_venv("3.3.0")` makes `third_party/.venv-mw330` instead: metaworld as published, on its own pin.
- `patch_metaworld_for_mujoco_317()` fixes metaworld's `reset_mocap_welds` for MuJoCo 3.17, which has 12 weld
  `eq_data` slots instead of 11 (without it: "could not broadcast input array from shape (11,) into shape (12,)").
  The patch is applied at run time (monkey-patch); nothing in site-packages is edited.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "third_party" / ".venv-mw"
WHEELS = ROOT / "third_party" / "wheels"
METAWORLD_VERSION = "3.1.1"
MUJOCO_VERSION = "3.17.0"

TASKS = [
    "button-press",
    "drawer-open",
    "coffee-pull",
    "soccer",
    "hammer",
    "door-lock",
    "lever-pull",
    "handle-pull",
]


def _say(msg: str) -> None:
    print(f"[mwref] {msg}", file=sys.stderr, flush=True)


METAWORLD_PINNED_MUJOCO = "3.3.0"


def _venv_ok(py: Path, mujoco_version: str) -> bool:
    if not py.exists():
        return False
    code = (
        "import importlib.metadata as m, sys;"
        f"sys.exit(0 if m.version('metaworld')=='{METAWORLD_VERSION}' and "
        f"m.version('mujoco')=='{mujoco_version}' else 1)"
    )
    return subprocess.run([str(py), "-c", code], capture_output=True).returncode == 0


def ensure_venv(mujoco_version: str = MUJOCO_VERSION) -> None:
    """Re-executes the current script inside the reference venv, creating it first when needed."""
    if mujoco_version not in (MUJOCO_VERSION, METAWORLD_PINNED_MUJOCO):
        sys.exit(f"error: mujoco {mujoco_version} is not supported here; use {MUJOCO_VERSION} or "
                 f"{METAWORLD_PINNED_MUJOCO}")
    venv = VENV if mujoco_version == MUJOCO_VERSION else VENV.with_name(".venv-mw330")
    py = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    if not _venv_ok(py, mujoco_version):
        _say(f"creating {venv} (metaworld=={METAWORLD_VERSION}, mujoco=={mujoco_version})")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        # metaworld 3.1.1 pins mujoco==3.3.0; gymnasium 1.x needs `packaging` but does not declare it
        subprocess.run(pip + [f"metaworld=={METAWORLD_VERSION}", "packaging", "imageio"], check=True)
        if mujoco_version == MUJOCO_VERSION:
            wheel = sorted(WHEELS.glob(f"mujoco-{MUJOCO_VERSION}-*.whl"))
            target = str(wheel[0]) if wheel else f"mujoco=={MUJOCO_VERSION}"
            subprocess.run(pip + ["--no-deps", target], check=True)
        if not _venv_ok(py, mujoco_version):
            sys.exit(f"error: {venv} does not hold metaworld {METAWORLD_VERSION} + mujoco {mujoco_version}")
    os.execv(str(py), [str(py)] + sys.argv)


def patch_metaworld_for_mujoco_317() -> None:
    import mujoco
    import numpy as np
    import metaworld.sawyer_xyz_env as sx

    weld = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0])

    def reset_mocap_welds(self) -> None:
        if self.model.nmocap > 0 and self.model.eq_data is not None:
            for i in range(self.model.eq_data.shape[0]):
                if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                    self.model.eq_data[i][:11] = weld

    sx.SawyerMocapBase.reset_mocap_welds = reset_mocap_welds


def versions() -> dict:
    import importlib.metadata as m

    return {p: m.version(p) for p in ["metaworld", "mujoco", "numpy", "gymnasium", "scipy"]}
