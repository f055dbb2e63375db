#!/usr/bin/env bash
# Runs telemine's whole test suite on this machine: installs and starts a
# real single-node Apache Kafka broker (scripts/kafka.sh), runs every test
# with it required, and stops it again.
#
#   scripts/test.sh [extra cargo test arguments]
#
# Needs: a Rust toolchain, Java 17 and Maven (installed with apt-get when
# missing and run as root), and make/gcc for the bundled librdkafka.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need java || ! need mvn; then
  if [ "$(id -u)" = 0 ] && need apt-get; then
    echo "test.sh: installing Java 17 and Maven" >&2
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  else
    echo "test.sh: Java 17 and Maven are needed to run the Kafka broker; install them first" >&2
    exit 1
  fi
fi

export TELEMINE_KAFKA_PORT="${TELEMINE_KAFKA_PORT:-39092}"
scripts/kafka.sh start
trap 'scripts/kafka.sh stop' EXIT

export TELEMINE_TEST_BROKERS="127.0.0.1:${TELEMINE_KAFKA_PORT}"
export TELEMINE_REQUIRE_BROKER=1
cargo test --workspace "$@"
