#!/usr/bin/env bash
# Runs a real single-node Apache Kafka broker (KRaft, combined
# broker+controller) on 127.0.0.1 for telemine's integration tests and
# benchmarks.
#
#   scripts/kafka.sh install   fetch the broker jars from Maven Central (cached)
#   scripts/kafka.sh start     install if needed, format storage, start, wait until ready
#   scripts/kafka.sh stop      stop the broker started by `start`
#   scripts/kafka.sh status    exit 0 if the broker answers
#   scripts/kafka.sh pause S   freeze the broker (SIGSTOP) for S seconds, then
#                              let it go on: a stall, for tests (exit 3: no
#                              broker of this script's on that port)
#
# Environment:
#   TELEMINE_KAFKA_HOME  cache and data folder (default: ~/.cache/telemine-kafka)
#   TELEMINE_KAFKA_PORT  client port (default 39092; the controller uses PORT+1)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
home="${TELEMINE_KAFKA_HOME:-$HOME/.cache/telemine-kafka}"
port="${TELEMINE_KAFKA_PORT:-39092}"
cport=$((port + 1))
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
jars="$home/jars-$version"
run="$home/run-$port"
pidfile="$run/broker.pid"

log() { echo "kafka.sh: $*" >&2; }

install() {
  if [ -f "$jars/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "mvn not found: install Maven (apt-get install maven)"; exit 1; }
  command -v java >/dev/null || { log "java not found: install a Java 17 runtime"; exit 1; }
  log "fetching Apache Kafka $version jars from Maven Central into $jars"
  rm -rf "$jars"; mkdir -p "$jars"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$jars"
  touch "$jars/.complete"
}

kafka_java() { java -Xms256m -Xmx1g -cp "$jars/*" -Dlog4j2.configurationFile="$run/log4j2.properties" "$@"; }

ready() {
  # A metadata request that succeeds means the broker serves clients.
  java -cp "$jars/*" -Dlog4j2.configurationFile="$run/log4j2.properties" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" --list >/dev/null 2>&1
}

start() {
  install
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0
  fi
  rm -rf "$run"; mkdir -p "$run/data"
  cat > "$run/server.properties" <<PROPS
node.id=1
process.roles=broker,controller
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$run/data
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.bytes=-1
PROPS
  cat > "$run/log4j2.properties" <<PROPS
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$run/broker.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=%d %p %c: %m%n
PROPS
  local cluster_id
  cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid | tail -n 1)"
  kafka_java kafka.tools.StorageTool format --config "$run/server.properties" \
    --cluster-id "$cluster_id" --standalone --ignore-formatted >"$run/format.log" 2>&1 \
    || { log "storage format failed:"; cat "$run/format.log" >&2; exit 1; }
  log "starting broker $version on 127.0.0.1:$port (logs: $run/)"
  nohup java -Xms512m -Xmx2g -cp "$jars/*" -Dlog4j2.configurationFile="$run/log4j2.properties" \
    kafka.Kafka "$run/server.properties" >"$run/stdout.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 90); do
    if ready; then log "ready"; return 0; fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      log "broker exited during start-up:"; tail -n 30 "$run/stdout.log" "$run/broker.log" >&2 || true; exit 1
    fi
    sleep 1
  done
  log "broker did not answer within 90 s; see $run/"; exit 1
}

stop() {
  if [ -f "$pidfile" ]; then
    local pid; pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    log "stopped"
  fi
}

pause() {
  paused_pid="$(cat "$pidfile" 2>/dev/null)" || { log "no broker started by this script on port $port"; exit 3; }
  kill -0 "$paused_pid" 2>/dev/null || { log "the broker (pid $paused_pid) is not running"; exit 3; }
  trap 'kill -CONT "$paused_pid" 2>/dev/null || true' EXIT
  log "freezing the broker (pid $paused_pid) for $1 s"
  kill -STOP "$paused_pid"
  sleep "$1"
  kill -CONT "$paused_pid"
  log "the broker goes on"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) ready ;;
  pause) pause "${2:?pause needs a number of seconds}" ;;
  *) echo "usage: $0 install|start|stop|status|pause SECONDS" >&2; exit 2 ;;
esac
