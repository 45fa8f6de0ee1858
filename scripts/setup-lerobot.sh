#!/usr/bin/env bash
# What the LeRobot interop tests need (called by scripts/setup.sh when WORLD4RL_LEROBOT=1; scripts/test.sh
# sets it), idempotently:
#  - lerobot 0.4.4 and the packages its dataset code imports, into the project's .venv, pinned in
#    scripts/requirements-lerobot.txt and installed with --no-deps so that torch stays at the project's;
#  - the ffmpeg program from Debian: `world4rl data import-lerobot` decodes video cameras with it, and its
#    shared libraries are what torchcodec (lerobot's video decoder) loads.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { printf '[setup-lerobot] %s\n' "$*" >&2; }

if ! command -v ffmpeg >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      say "ffmpeg is missing and this is not root (no sudo): install ffmpeg and re-run"; exit 1
    fi
  fi
  say "installing ffmpeg (Debian)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

if ! .venv/bin/python - <<'PYEOF' 2>/dev/null
import importlib.metadata as m, sys
want = {}
for line in open("scripts/requirements-lerobot.txt"):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        want[name] = version
try:
    ok = all(m.version(n) == v for n, v in want.items())
except m.PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PYEOF
then
  say "installing lerobot 0.4.4 and its dataset dependencies into .venv (pinned, --no-deps)"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r scripts/requirements-lerobot.txt
fi
say "ready"
