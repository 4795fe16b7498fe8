# Sourced by quickstart.sh and test.sh: create .venv and install FlashSpark into it.
# Usage: . scripts/bootstrap.sh [EXTRAS]   (e.g. "dev"; nothing for the tool alone)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FLASHSPARK_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.flashspark-installed-${EXTRAS:-base}"
TARGET="$ROOT${EXTRAS:+[$EXTRAS]}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "==> installing flashspark${EXTRAS:+[$EXTRAS]} into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$TARGET" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import flashspark" 
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
