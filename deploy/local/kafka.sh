#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft, broker+controller in one JVM) on 127.0.0.1 for
# the demo and the tests. First `up` fetches the broker's jars from Maven Central with mvn
# into .cache/kafka/libs (ignored); data and logs live in .cache/kafka too.
#
#   deploy/local/kafka.sh up|down|status|fetch|reset
#
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_HEAP (512m),
# STREAMWATCH_CACHE (<repo>/.cache).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${STREAMWATCH_CACHE:-$repo/.cache}/kafka
libs=$cache/libs
data=$cache/data
logs=$cache/logs
pidfile=$cache/kafka.pid
port=${KAFKA_PORT:-9092}
cport=${KAFKA_CONTROLLER_PORT:-9093}
heap=${KAFKA_HEAP:-512m}

log() { printf 'kafka.sh: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

fetch() {
  if [[ -f $libs/.complete ]]; then return 0; fi
  if ! command -v mvn >/dev/null; then
    log "mvn not found; installing Debian's maven"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null
  fi
  if ! command -v java >/dev/null; then
    log "java not found; installing Debian's openjdk-17-jre-headless"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  fi
  log "fetching Apache Kafka jars from Maven Central (once) into $libs"
  local t0=$SECONDS
  rm -rf "$libs"
  mkdir -p "$cache"
  if ! mvn -q -B -Dstyle.color=never -f "$here/kafka-pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$libs" -DincludeScope=runtime >"$cache/fetch.log" 2>&1; then
    cat "$cache/fetch.log" >&2; log "fetch failed"; exit 1
  fi
  touch "$libs/.complete"
  log "fetched $(ls "$libs" | grep -c '\.jar$') jars in $((SECONDS - t0)) s"
}

write_config() {
  mkdir -p "$cache" "$logs"
  cat >"$cache/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.segment.bytes=67108864
log.retention.hours=24
PROPS
  cat >"$cache/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
PROPS
}

java_run() {
  java -Xms128m "-Xmx$heap" -XX:+UseG1GC -Djava.awt.headless=true \
       "-Dlog4j2.configurationFile=$cache/log4j2.properties" -cp "$libs/*" "$@"
}

up() {
  if running && port_open "$port"; then log "already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  if port_open "$port"; then log "port $port is taken by another process"; exit 1; fi
  fetch
  write_config
  if [[ ! -f $data/meta.properties ]]; then
    local cid
    cid=$(java_run kafka.tools.StorageTool random-uuid)
    java_run kafka.tools.StorageTool format -t "$cid" -c "$cache/server.properties" >/dev/null
  fi
  local t0=$SECONDS
  nohup java -Xms128m "-Xmx$heap" -XX:+UseG1GC -Djava.awt.headless=true \
       "-Dlog4j2.configurationFile=$cache/log4j2.properties" -cp "$libs/*" \
       kafka.Kafka "$cache/server.properties" >"$logs/stdout.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if ! running; then log "broker exited; see $logs/stdout.log and $logs/server.log"; tail -n 20 "$logs/stdout.log" >&2; exit 1; fi
    if port_open "$port" && grep -q "Kafka Server started" "$logs/server.log" 2>/dev/null; then
      log "up on 127.0.0.1:$port (pid $(cat "$pidfile")) in $((SECONDS - t0)) s"
      return 0
    fi
    sleep 0.5
  done
  log "broker did not become ready in 60 s; see $logs/server.log"; exit 1
}

down() {
  if ! running; then log "not running"; rm -f "$pidfile"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "stopped"; return 0; }; sleep 0.5; done
  log "did not stop in 30 s; killing"; kill -9 "$pid" 2>/dev/null || true; rm -f "$pidfile"
}

status() {
  if running && port_open "$port"; then echo "running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; else echo "stopped"; return 3; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  fetch) fetch ;;
  reset) down; rm -rf "$data" "$logs"; log "data removed" ;;
  *) echo "usage: $0 up|down|status|fetch|reset" >&2; exit 2 ;;
esac
