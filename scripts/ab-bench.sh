#!/usr/bin/env bash
# Same-run A/B of two release builds of telemine: `telemine bench` with
# each binary in turn on one broker, so both see the same machine and the
# same broker state. The order alternates (base then head in odd pairs,
# head then base in even ones): the second run of a pair reads a warmer
# topic. Prints each run's table
# rows prefixed with the pair number and the build; BENCHMARKS.md says
# how the figures were read (medians and per-pair ratios).
#
#   scripts/ab-bench.sh BASE_BINARY HEAD_BINARY [PAIRS=5] [RECORDS=3000000]
#
# Build each binary with `cargo build --release` at its commit and copy
# target/release/telemine aside first. The broker runs on
# $TELEMINE_KAFKA_PORT (default 39592) and is stopped at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
base=${1:?base binary}; head=${2:?head binary}; pairs=${3:-5}; records=${4:-3000000}
export TELEMINE_KAFKA_PORT=${TELEMINE_KAFKA_PORT:-39592}
scripts/kafka.sh start >/dev/null
trap 'scripts/kafka.sh stop >/dev/null' EXIT
for i in $(seq 1 "$pairs"); do
  order="base head"; [ $((i % 2)) = 0 ] && order="head base"
  for who in $order; do
    bin=$base; [ "$who" = head ] && bin=$head
    # One round per run where the build has rounds (the pairs are here).
    rounds=(); "$bin" bench --help | grep -q -- --pairs && rounds=(--pairs 1)
    "$bin" bench --brokers "127.0.0.1:$TELEMINE_KAFKA_PORT" --records "$records" \
      --config config/telemine.toml "${rounds[@]}" 2>/dev/null \
      | grep "^|" | grep -v "^|---\|measure" | sed "s/^/$i $who /"
  done
done
