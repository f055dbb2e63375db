#!/usr/bin/env bash
# The kill loop in full: `telemine run` killed with SIGKILL at
# pseudo-random moments under a steady stream, restarted each time, its
# notifications counted against an uninterrupted run — under
# exactly-once (lost and doubled must be 0) and at-least-once (lost must
# be 0; the doubled ones are its duplicate window). CI runs the same tests
# with 20 kills; this runs as many as asked and prints the figures that go
# into RELIABILITY.md.
#
#   scripts/kill-loop.sh [KILLS]      (default 100)
#
# Starts its own broker on TELEMINE_KAFKA_PORT (default 39292) and stops it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
kills="${1:-100}"
export TELEMINE_KAFKA_PORT="${TELEMINE_KAFKA_PORT:-39292}"
scripts/kafka.sh start
trap 'scripts/kafka.sh stop' EXIT
export TELEMINE_TEST_BROKERS="127.0.0.1:${TELEMINE_KAFKA_PORT}"
export TELEMINE_REQUIRE_BROKER=1
export TELEMINE_KILLS="$kills"
cargo test --test kafka_exactly_once -- --nocapture --test-threads 1 2>&1 \
  | grep -E "^delivery = |^test |test result"
