#!/usr/bin/env bash
# The broker-stall test in a loop: each run freezes the broker past the
# group's session timeout, then stops `telemine run` with SIGTERM (it must
# exit within 60 s, a thread dump is printed when it does not). CI runs it
# once; this runs it N times and prints how many passed and how many
# stops left a consumer behind (`did not leave its group`).
#
#   scripts/stall-loop.sh [RUNS]      (default 10)
#
# Starts its own broker on TELEMINE_KAFKA_PORT (default 39392) and stops it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
runs="${1:-10}"
export TELEMINE_KAFKA_PORT="${TELEMINE_KAFKA_PORT:-39392}"
scripts/kafka.sh start
trap 'scripts/kafka.sh stop' EXIT
export TELEMINE_TEST_BROKERS="127.0.0.1:${TELEMINE_KAFKA_PORT}"
export TELEMINE_REQUIRE_BROKER=1
cargo test --test kafka_stall --no-run
log="$(mktemp)"
passed=0 left=0
for i in $(seq 1 "$runs"); do
  if cargo test --test kafka_stall -- --nocapture >"$log" 2>&1; then
    passed=$((passed + 1))
  else
    echo "run $i failed:" >&2
    tail -40 "$log" >&2
  fi
  if grep -q "did not leave its group" "$log"; then left=$((left + 1)); fi
done
rm -f "$log"
echo "stall loop: $passed of $runs passed; $left stops left a consumer behind"
[ "$passed" = "$runs" ]
