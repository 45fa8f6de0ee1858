#!/usr/bin/env bash
# world4rl: MuJoCo + Meta-World set-up for the cargo feature `mujoco` of crates/envs (package w4rl-envs).
#
# Idempotent; a second run with everything in place only checks and prints the environment.
#  - downloads the `mujoco==3.17.0` and `metaworld==3.1.1` wheels from PyPI (`pip download --no-deps`)
#    into third_party/wheels/ (git-ignored; nothing from the wheels is ever committed);
#  - extracts libmujoco.so.3.17.0 (+ the libmujoco.so link) into third_party/mujoco-3.17.0/lib;
#  - extracts the Meta-World assets (scene XMLs, meshes, textures) into third_party/metaworld-assets;
#  - installs the Debian EGL packages for headless rendering when they are missing.
# At the end it prints the environment variables the build needs (also written to third_party/mujoco.env,
# which can be `source`d).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TP="$ROOT/third_party"
MJ_VERSION=3.17.0
MW_VERSION=3.1.1
MJ_DIR="$TP/mujoco-$MJ_VERSION"
MW_ASSETS="$TP/metaworld-assets"
WHEELS="$TP/wheels"
PY="${PYTHON:-python3}"

say() { printf '[setup-mujoco] %s\n' "$*" >&2; }

mkdir -p "$TP"

# --- Debian EGL libraries (headless offscreen rendering through Mesa) ---------------------------------------
missing=()
for p in libegl1 libegl-mesa0 libgl1-mesa-dri; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      say "missing Debian packages ${missing[*]} and not root (no sudo): install them and re-run"; exit 1
    fi
  fi
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- wheels -------------------------------------------------------------------------------------------------
find_wheel() { ls "$WHEELS"/"$1"-"$2"-*.whl 2>/dev/null | head -n1 || true; }
fetch_wheel() {
  local name="$1" version="$2"
  if [ -z "$(find_wheel "$name" "$version")" ]; then
    say "downloading $name==$version wheel from PyPI"
    mkdir -p "$WHEELS"
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      "$name==$version" -d "$WHEELS"
  fi
  local whl; whl="$(find_wheel "$name" "$version")"
  if [ -z "$whl" ]; then say "no $name-$version wheel in $WHEELS after pip download"; exit 1; fi
  printf '%s' "$whl"
}

# Extract members of a wheel (a zip) under a prefix into a directory, with Python's zipfile (no unzip needed).
extract() {
  "$PY" - "$@" <<'PYEOF'
import sys, zipfile, os, shutil
whl, prefix, dest = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"{whl}: nothing under {prefix}")
    for n in names:
        out = os.path.join(dest, n[len(prefix):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(n) as src, open(out + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(out + ".part", out)
PYEOF
}

# --- libmujoco ----------------------------------------------------------------------------------------------
if [ ! -f "$MJ_DIR/lib/libmujoco.so.$MJ_VERSION" ] || [ ! -e "$MJ_DIR/lib/libmujoco.so" ]; then
  whl="$(fetch_wheel mujoco "$MJ_VERSION")"
  say "extracting libmujoco from $(basename "$whl")"
  tmp="$TP/.mujoco-extract"
  rm -rf "$tmp"; mkdir -p "$tmp"
  extract "$whl" "mujoco/" "$tmp"
  mkdir -p "$MJ_DIR/lib"
  cp "$tmp/libmujoco.so.$MJ_VERSION" "$MJ_DIR/lib/"
  if [ -d "$tmp/plugin" ]; then rm -rf "$MJ_DIR/lib/plugin"; cp -r "$tmp/plugin" "$MJ_DIR/lib/"; fi
  # the SONAME is libmujoco.so.3.17.0; the linker looks for libmujoco.so
  ln -sfn "libmujoco.so.$MJ_VERSION" "$MJ_DIR/lib/libmujoco.so"
  rm -rf "$tmp"
fi

# --- Meta-World assets ----------------------------------------------------------------------------------------
if [ ! -f "$MW_ASSETS/.complete-$MW_VERSION" ]; then
  whl="$(fetch_wheel metaworld "$MW_VERSION")"
  say "extracting Meta-World assets from $(basename "$whl")"
  rm -rf "$MW_ASSETS"; mkdir -p "$MW_ASSETS"
  extract "$whl" "metaworld/assets/" "$MW_ASSETS"
  touch "$MW_ASSETS/.complete-$MW_VERSION"
fi

cat > "$TP/mujoco.env" <<EOF
export MUJOCO_DYNAMIC_LINK_DIR="$MJ_DIR/lib"
export WORLD4RL_METAWORLD_ASSETS="$MW_ASSETS"
EOF
say "MuJoCo $MJ_VERSION in $MJ_DIR/lib, Meta-World $MW_VERSION assets in $MW_ASSETS"
say "the build with --features mujoco needs (also in third_party/mujoco.env):"
cat "$TP/mujoco.env"
