#!/usr/bin/env bash
# Set up and run FlashSpark's checks and tests: ruff, mypy, pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k render).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh dev
echo "==> ruff";  ruff check .
echo "==> mypy";  mypy
echo "==> pytest"
python -m pytest "$@"
