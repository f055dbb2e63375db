#!/usr/bin/env bash
# The floors of the house, checked from cargo's own view of the workspace:
# every crate of ours depends only on the crates of ours below it (the
# table below, which ARCHITECTURE.md's "Crates" table states), only the
# connectors and the binary's crate talk to librdkafka directly, and
# ARCHITECTURE.md names every crate of the workspace. Cargo already
# refuses a cycle between crates; this refuses an edge that runs up or
# sideways. CI runs it.
#
#   scripts/check-floors.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# crate: the crates of ours it may depend on (normal dependencies).
allowed='
telemine-types:
telemine-model:
telemine-codec:
telemine-connectors: telemine-types telemine-codec
telemine-sql: telemine-types telemine-codec
telemine-observe: telemine-types telemine-sql
telemine-detector: telemine-model telemine-sql
telemine-alerting: telemine-types telemine-connectors telemine-observe
telemine-stream: telemine-types telemine-codec telemine-sql telemine-observe
telemine-runtime: telemine-types telemine-codec telemine-connectors telemine-sql telemine-observe telemine-detector telemine-alerting telemine-stream
telemine: telemine-types telemine-model telemine-codec telemine-connectors telemine-sql telemine-observe telemine-detector telemine-alerting telemine-stream telemine-runtime
'
# Crates that may depend on rdkafka themselves.
kafka_ok=' telemine-connectors telemine '
# Crates that must not reach librdkafka at all, through any crate: the
# streaming core and everything below it.
kafka_free='telemine-types telemine-model telemine-codec telemine-sql telemine-observe telemine-detector telemine-stream'

metadata="$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null || cargo metadata --format-version 1 --no-deps)"
fail=0
members="$(jq -r '.packages[].name' <<<"$metadata" | sort)"
for crate in $members; do
  line="$(grep -E "^$crate:" <<<"$allowed" || true)"
  if [ -z "$line" ]; then
    echo "check-floors: crate $crate is not in the floor table of scripts/check-floors.sh (and ARCHITECTURE.md)" >&2
    fail=1
    continue
  fi
  may=" ${line#*:} "
  deps="$(jq -r --arg c "$crate" '.packages[] | select(.name == $c) | .dependencies[] | select(.kind == null) | .name' <<<"$metadata" | sort -u)"
  for dep in $deps; do
    case "$dep" in
      telemine*)
        if [[ "$may" != *" $dep "* ]]; then
          echo "check-floors: $crate depends on $dep, which is not below it" >&2
          fail=1
        fi
        ;;
      rdkafka)
        if [[ "$kafka_ok" != *" $crate "* ]]; then
          echo "check-floors: $crate depends on rdkafka itself; only the connectors talk to Kafka" >&2
          fail=1
        fi
        ;;
    esac
  done
  if ! grep -q "\`$crate\`" ARCHITECTURE.md; then
    echo "check-floors: ARCHITECTURE.md does not name crate \`$crate\`" >&2
    fail=1
  fi
done
for crate in $kafka_free; do
  tree="$(cargo tree -p "$crate" -e normal --prefix none --offline 2>/dev/null || cargo tree -p "$crate" -e normal --prefix none)"
  if grep -q '^rdkafka ' <<<"$tree"; then
    echo "check-floors: $crate reaches rdkafka through its dependencies: $(cargo tree -p "$crate" -e normal -i rdkafka --offline 2>/dev/null | head -4 | tr '\n' ' ')" >&2
    fail=1
  fi
done
if [ "$fail" = 0 ]; then
  echo "check-floors: $(wc -w <<<"$members") crates, every dependency runs down; $(wc -w <<<"$kafka_free") crates reach no librdkafka"
fi
exit "$fail"
