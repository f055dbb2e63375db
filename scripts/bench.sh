#!/usr/bin/env bash
# The end-to-end benchmark of BENCHMARKS.md: starts the real Kafka broker,
# builds the release binary, produces RECORDS (default 5,000,000) generated
# JSON telemetry records, and measures a bare rdkafka consumer and the
# engine on the same topic. Then the criterion benches unless NO_CRITERION=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
records="${RECORDS:-5000000}"
export TELEMINE_KAFKA_PORT="${TELEMINE_KAFKA_PORT:-39092}"
scripts/kafka.sh start
trap 'scripts/kafka.sh stop' EXIT
cargo build --release --bin telemine
target="${CARGO_TARGET_DIR:-target}"
"$target/release/telemine" bench --brokers "127.0.0.1:$TELEMINE_KAFKA_PORT" --records "$records"
if [ "${NO_CRITERION:-0}" != 1 ]; then
  cargo bench --bench decode --bench window_sql
fi
