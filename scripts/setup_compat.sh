#!/usr/bin/env bash
# Build .venv-compat: torch as the stack's, the newest numpy / Pillow / pycocotools / safetensors
# (requirements/compat.txt, unpinned), and the bridge installed as a user installs it (`pip install .`).
# Usage: setup_compat.sh PYTHON TORCH_VERSION. Cached: a stamp over requirements/compat.txt and this script;
# `rm -rf .venv-compat` (or `make compat-refresh`) takes the then-newest releases.
set -euo pipefail
PYTHON="$1"; TORCH_VERSION="$2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_COMPAT="${VENV_COMPAT:-$ROOT/.venv-compat}"
STAMP="$(cd "$ROOT" && LC_ALL=C sha256sum requirements/compat.txt scripts/setup_compat.sh | sha256sum | cut -c1-16)"
STAMP_FILE="$VENV_COMPAT/.bridge-compat-stamp"

if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP" ]; then
  echo "compat environment $VENV_COMPAT up to date (stamp $STAMP)"
  exit 0
fi
rm -rf "$VENV_COMPAT"
"$PYTHON" -m venv "$VENV_COMPAT"
PIP=("$VENV_COMPAT/bin/python" -m pip --disable-pip-version-check)
START=$SECONDS
"${PIP[@]}" install -q "torch==$TORCH_VERSION"
echo "compat: torch $TORCH_VERSION in $((SECONDS - START)) s"
"${PIP[@]}" install -q --upgrade -r "$ROOT/requirements/compat.txt"
"${PIP[@]}" install -q "$ROOT"
"$VENV_COMPAT/bin/python" -c "import bridge, numpy, PIL, pycocotools, safetensors, torch; \
print('compat:', *(f'{m.__name__} {m.__version__}' for m in (torch, numpy, PIL, safetensors)), \
'pycocotools', __import__('importlib.metadata').metadata.version('pycocotools'))"
rm -rf "$ROOT/build" "$ROOT"/*.egg-info
echo "$STAMP" > "$STAMP_FILE"
echo "compat environment $VENV_COMPAT built in $((SECONDS - START)) s (stamp $STAMP)"
