#!/usr/bin/env bash
# Run the framework-free tests (tests/compat_tests.txt) in .venv-compat against the INSTALLED bridge: the
# bridge is reinstalled (non-editable) when its sources changed, and the tests run from a copy of tests/
# outside the clone, so nothing is imported from the working tree.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_COMPAT="${VENV_COMPAT:-$ROOT/.venv-compat}"
PY="$VENV_COMPAT/bin/python"
[ -x "$PY" ] || { echo "compat: $VENV_COMPAT is missing: run \`make setup\`" >&2; exit 1; }
SOURCE_STAMP="$(cd "$ROOT" && LC_ALL=C find bridge d2_side mmdet_side pyproject.toml MANIFEST.in -type f \
  ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV_COMPAT/.bridge-source-stamp" 2>/dev/null)" != "$SOURCE_STAMP" ]; then
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall "$ROOT"
  rm -rf "$ROOT/build" "$ROOT"/*.egg-info
  echo "$SOURCE_STAMP" > "$VENV_COMPAT/.bridge-source-stamp"
fi
RUN="$(mktemp -d)"
trap 'rm -rf "$RUN"' EXIT
cp -r "$ROOT/tests" "$RUN/tests"
mapfile -t FILES < <(grep -v '^#' "$ROOT/tests/compat_tests.txt" | sed '/^$/d; s|^|tests/|')
cd "$RUN"
"$PY" -c "import importlib.metadata as m; print('compat env:', ', '.join(f'{d} {m.version(d)}' for d in \
  ('torch', 'numpy', 'pillow', 'pycocotools', 'safetensors', 'd2-mmdet-bridge')))"
"$PY" -m pytest -q -p no:cacheprovider "${FILES[@]}"
