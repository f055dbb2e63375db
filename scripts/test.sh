#!/usr/bin/env bash
# Runs telemine's whole test suite on this machine: installs and starts a
# real single-node Apache Kafka broker (scripts/kafka.sh), installs the
# other real peers from Debian, runs every test with them required, and
# stops the broker again.
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

# The other real peers the tests talk to, from Debian: Prometheus and
# promtool (scrape /metrics), Alertmanager (the native sender), collectd
# (write_kafka), headless Chromium with chromedriver (the live page).
# Installed when missing and this runs as root; then a test whose peer is
# missing fails instead of skipping.
peers=(prometheus promtool prometheus-alertmanager collectd chromium chromedriver)
# collectd-core does not pull in what its write_kafka plugin links to
# (libyajl2, librdkafka1): without them collectd refuses the config.
write_kafka=/usr/lib/collectd/write_kafka.so
plugin_ok() { [ -e "$write_kafka" ] && ! ldd "$write_kafka" 2>/dev/null | grep -q "not found"; }
check_peers() {
  missing=()
  for p in "${peers[@]}"; do need "$p" || missing+=("$p"); done
  if need collectd && ! plugin_ok; then missing+=("collectd's write_kafka libraries"); fi
}
check_peers
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && need apt-get; then
  echo "test.sh: installing the test peers (${missing[*]}) from Debian" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager collectd-core libyajl2 librdkafka1 chromium chromium-driver >/dev/null
fi
check_peers
if [ "${#missing[@]}" -eq 0 ]; then
  export TELEMINE_REQUIRE_PEERS=1
else
  echo "test.sh: ${missing[*]} not installed (run as root to install them): the tests needing them skip" >&2
fi

export TELEMINE_KAFKA_PORT="${TELEMINE_KAFKA_PORT:-39092}"
scripts/kafka.sh start
trap 'scripts/kafka.sh stop' EXIT

export TELEMINE_TEST_BROKERS="127.0.0.1:${TELEMINE_KAFKA_PORT}"
export TELEMINE_REQUIRE_BROKER=1
cargo test --workspace "$@"
