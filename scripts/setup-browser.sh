#!/usr/bin/env bash
# What the playground's browser test needs (called by scripts/setup.sh when WORLD4RL_BROWSER=1; scripts/test.sh
# sets it), idempotently: Debian's chromium and chromium-driver (the test drives a headless Chromium over
# WebDriver with the fantoccini crate).
set -euo pipefail
say() { printf '[setup-browser] %s\n' "$*" >&2; }
if command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    say "chromium and chromium-driver are missing and this is not root (no sudo): install them and re-run"; exit 1
  fi
fi
say "installing chromium and chromium-driver (Debian)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
say "ready"
