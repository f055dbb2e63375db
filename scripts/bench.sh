#!/usr/bin/env bash
# The end-to-end benchmark of BENCHMARKS.md: starts the real Kafka broker,
# builds the release binary, produces RECORDS (default 3,000,000) generated
# JSON telemetry records, warms the topic, then PAIRS (default 5) rounds of
# a bare rdkafka consumer and the engine with and without its models on
# the same warm topic. Writes the figures to OUT (default
# target/bench.json) and compares them with the run recorded in
# benches/results/bench.json (copy OUT there to record a new one). Then
# the criterion benches unless NO_CRITERION=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
records="${RECORDS:-3000000}"
pairs="${PAIRS:-5}"
target="${CARGO_TARGET_DIR:-target}"
out="${OUT:-$target/bench.json}"
export TELEMINE_KAFKA_PORT="${TELEMINE_KAFKA_PORT:-39092}"
scripts/kafka.sh start
trap 'scripts/kafka.sh stop' EXIT
cargo build --release --bin telemine
compare=()
if [ -f benches/results/bench.json ]; then
  compare=(--compare benches/results/bench.json)
fi
mkdir -p "$(dirname "$out")"
"$target/release/telemine" bench --brokers "127.0.0.1:$TELEMINE_KAFKA_PORT" \
  --records "$records" --pairs "$pairs" --json "$out" "${compare[@]}"
if [ "${NO_CRITERION:-0}" != 1 ]; then
  cargo bench --bench decode --bench window_sql
fi
