#!/usr/bin/env bash
# Build the real detectron2 + mmdet stack into .venv (idempotent; prints each step).
# What each step works around is recorded in docs/STACK.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
CACHE="${D2MB_CACHE:-$HOME/.cache/d2-mmdet-bridge}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
D2_SDIST=pb1-detectron2==0.6
D2_SDIST_SHA256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29

step() { printf '\n==> %s\n' "$*"; }

# A finished setup is recognised at once: the stamp is a sha256 over every pinned input; it is written
# into the venv only after the final check passed, so a failed or interrupted setup runs again.
STAMP="$(cd "$ROOT" && export LC_ALL=C && sha256sum requirements/* scripts/setup_stack.sh scripts/build_detectron2.sh \
  scripts/setup_compat.sh scripts/check_stack.py patches/* pyproject.toml | sha256sum | cut -c1-16)"
STAMP_FILE="$VENV/.bridge-setup-stamp"
VENV_COMPAT="${VENV_COMPAT:-$ROOT/.venv-compat}"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP_FILE" 2>/dev/null)" = "$STAMP" ] \
   && [ -f "$VENV_COMPAT/.bridge-compat-stamp" ]; then
  echo "setup: $VENV is up to date (stamp $STAMP); nothing to do (delete $STAMP_FILE to force a re-check)"
  exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found %s" % sys.version' \
  || { echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  step "create $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
PY="$VENV/bin/python"

step "build tools (setuptools<81 keeps pkg_resources for mmengine's mmdet:: configs)"
"${PIP[@]}" install -q -c "$ROOT/requirements/constraints.txt" setuptools wheel ninja

step "torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
if ! "$PY" -c "import torch, torchvision; assert torch.__version__.startswith('$TORCH_VERSION') and torchvision.__version__.startswith('$TORCHVISION_VERSION')" 2>/dev/null; then
  "${PIP[@]}" install -q -c "$ROOT/requirements/constraints.txt" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

step "mmcv $MMCV_VERSION with compiled ops (wheel cached in $CACHE/wheels)"
MMCV_WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-torch-$TORCH_VERSION"
if ! "$PY" -c "import mmcv, mmcv.ops; from mmcv import _ext; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  if ! ls "$MMCV_WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    echo "no cached mmcv wheel: building it from the sdist (about 25 minutes on 2 cores)"
    BUILD_DIR="$(mktemp -d)"
    "${PIP[@]}" install -q -r "$ROOT/requirements/mmcv-build.txt"
    "${PIP[@]}" download -q --no-deps --no-binary :all: -d "$BUILD_DIR" "mmcv==$MMCV_VERSION"
    tar -xzf "$BUILD_DIR"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD_DIR"
    # torch >= 2.10 ATen headers require C++20; mmcv 2.1.0 asks for C++17.
    sed -i "s/'-std=c++17'/'-std=c++20'/g" "$BUILD_DIR/mmcv-$MMCV_VERSION/setup.py"
    grep -q "c++20" "$BUILD_DIR/mmcv-$MMCV_VERSION/setup.py" || { echo "setup: could not patch mmcv's C++ flag" >&2; exit 1; }
    (cd "$BUILD_DIR/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
      "$PY" -m pip wheel --no-deps --no-build-isolation -w "$BUILD_DIR/dist" .)
    mkdir -p "$MMCV_WHEEL_DIR.tmp"
    cp "$BUILD_DIR"/dist/mmcv-*.whl "$MMCV_WHEEL_DIR.tmp/"
    rm -rf "$MMCV_WHEEL_DIR" && mv "$MMCV_WHEEL_DIR.tmp" "$MMCV_WHEEL_DIR"
    rm -rf "$BUILD_DIR"
  fi
  "${PIP[@]}" install -q --no-deps "$MMCV_WHEEL_DIR"/mmcv-*.whl
fi

step "pinned runtime requirements (mmengine, mmdet, detectron2's declared deps, pycocotools, ...)"
"${PIP[@]}" install -q -c "$ROOT/requirements/constraints.txt" -r "$ROOT/requirements/runtime.txt"

step "panopticapi-lite (without its declared deps: it runs with numpy 2 and Pillow<10)"
"${PIP[@]}" install -q --no-deps -c "$ROOT/requirements/constraints.txt" panopticapi-lite

step "detectron2 0.6 (pure Python, from the $D2_SDIST sdist, patched for numpy 2)"
"$ROOT/scripts/build_detectron2.sh" "$VENV" "$CACHE" "$D2_SDIST" "$D2_SDIST_SHA256"

step "d2-mmdet-bridge itself (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

step "re-pin setuptools<81 (mmengine needs pkg_resources at run time)"
"${PIP[@]}" install -q -c "$ROOT/requirements/constraints.txt" setuptools

step "chromium for the report's browser test (tests/test_report.py), from the OS packages"
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "chromium: $(command -v chromium || command -v chromium-browser)"
elif ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium is missing and this system has no apt-get: install Chromium with its package manager" >&2
elif [ "$(id -u)" = 0 ]; then
  { DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } \
    || echo "could not install chromium (tests/test_report.py will fail): apt-get install -y chromium" >&2
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -q \
    && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
    || echo "could not install chromium (tests/test_report.py will fail): sudo apt-get install -y chromium" >&2
else
  echo "chromium is missing (tests/test_report.py needs it): run  sudo apt-get install -y chromium" >&2
fi

step "check"
"$PY" "$ROOT/scripts/check_stack.py"

step "compatibility environment (newest numpy / Pillow / pycocotools / safetensors, the bridge via pip install .)"
VENV_COMPAT="$VENV_COMPAT" "$ROOT/scripts/setup_compat.sh" "$PYTHON" "$TORCH_VERSION"

echo "$STAMP" > "$STAMP_FILE"
echo "setup: done (stamp $STAMP written to $STAMP_FILE)"
