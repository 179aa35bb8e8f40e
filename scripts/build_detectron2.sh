#!/usr/bin/env bash
# Build and install detectron2 0.6 as a pure-Python package from the pb1-detectron2==0.6 sdist.
# Usage: build_detectron2.sh VENV CACHE SDIST_SPEC SDIST_SHA256
# Changes to the sdist (all in patches/, see docs/STACK.md):
#   patches/detectron2-0.6-pure-python.patch  numpy 2 aliases + COCOEvaluator fallback to pycocotools
#   patches/detectron2_C.py                  the detectron2._C stand-in
#   patches/detectron2_setup.py              setup.py without the C++ extension, with detectron2.projects.*
set -euo pipefail
VENV="$1"; CACHE="$2"; SPEC="$3"; SHA="$4"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$VENV/bin/python"
# The build's stamp: sha256 over the names and contents of patches/* and of this script. It is written
# into the installed package (detectron2/BRIDGE_BUILD) and names the cached wheel; any change to a patch,
# the stand-in, the setup.py or this script gives a new stamp, so the next run rebuilds and reinstalls.
PATCH_HASH="$(cd "$ROOT" && LC_ALL=C && sha256sum patches/* scripts/build_detectron2.sh | sha256sum | cut -c1-12)"
WHEEL_DIR="$CACHE/wheels/detectron2-0.6-pure-$PATCH_HASH"
SDIST_DIR="$CACHE/sdists"
SHARE="$VENV/share"

if "$PY" -c "import detectron2, detectron2._C as C, detectron2.projects.deeplab; assert C.BUILD_NOTE and '$PATCH_HASH' in open(detectron2.__file__.replace('__init__.py', 'BRIDGE_BUILD')).read()" 2>/dev/null \
   && [ -f "$SHARE/detectron2-0.6-tools/train_net.py" ] && [ -f "$SHARE/detectron2-0.6-sdist/setup.py" ]; then
  echo "detectron2 0.6 (pure-Python, build stamp $PATCH_HASH) already installed"
  exit 0
fi

if ! ls "$WHEEL_DIR"/detectron2-*.whl >/dev/null 2>&1; then
  mkdir -p "$SDIST_DIR"
  SDIST="$SDIST_DIR/pb1-detectron2-0.6.tar.gz"
  if [ ! -f "$SDIST" ]; then
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$SDIST_DIR" "$SPEC"
  fi
  echo "$SHA  $SDIST" | sha256sum -c - || { echo "setup: sha256 of $SDIST does not match $SHA" >&2; rm -f "$SDIST"; exit 1; }
  BUILD="$(mktemp -d)"
  tar -xzf "$SDIST" -C "$BUILD"
  SRC="$BUILD/pb1-detectron2-0.6"
  patch -d "$SRC" -p1 --forward --quiet < "$ROOT/patches/detectron2-0.6-pure-python.patch"
  cp "$ROOT/patches/detectron2_C.py" "$SRC/detectron2/_C.py"
  mv "$SRC/setup.py" "$SRC/setup.py.orig"
  cp "$ROOT/patches/detectron2_setup.py" "$SRC/setup.py"
  rm -rf "$SRC/setup.cfg" "$SRC"/*.egg-info
  echo "pure-Python build of pb1-detectron2 0.6 by d2-mmdet-bridge, build stamp $PATCH_HASH" > "$SRC/detectron2/BRIDGE_BUILD"
  (cd "$SRC" && "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$BUILD/dist" .)
  mkdir -p "$WHEEL_DIR.tmp" && cp "$BUILD"/dist/detectron2-*.whl "$WHEEL_DIR.tmp/"
  # keep the sdist's tools/ (train_net.py, ...): the tests run detectron2's own train_net.py;
  # and its own setup.py (before ours replaces it): the tests check its install_requires are installed
  cp -r "$SRC/tools" "$WHEEL_DIR.tmp/tools"
  mkdir -p "$WHEEL_DIR.tmp/sdist" && cp "$SRC/setup.py.orig" "$WHEEL_DIR.tmp/sdist/setup.py"
  rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.tmp" "$WHEEL_DIR"
  rm -rf "$BUILD"
fi
"$PY" -m pip install -q --no-deps --force-reinstall "$WHEEL_DIR"/detectron2-*.whl
mkdir -p "$SHARE"
rm -rf "$SHARE/detectron2-0.6-tools" && cp -r "$WHEEL_DIR/tools" "$SHARE/detectron2-0.6-tools"
rm -rf "$SHARE/detectron2-0.6-sdist" && cp -r "$WHEEL_DIR/sdist" "$SHARE/detectron2-0.6-sdist"
echo "detectron2 0.6 installed (pure-Python, build stamp $PATCH_HASH); its tools/ in $SHARE/detectron2-0.6-tools"
