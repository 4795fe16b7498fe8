#!/usr/bin/env bash
# Set up FlashSpark and run its main job on the embedded default (local-cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh local
echo "==> checking the embedded default recipe"
flashspark config check --profile local-cpu
out="${FLASHSPARK_HOME:-$HOME/.cache/flashspark}/rendered/local-cpu"
echo "==> rendering its launch plan into $out"
flashspark config render --profile local-cpu --out "$out"
