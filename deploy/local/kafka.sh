#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft, broker+controller in one JVM) on 127.0.0.1 for
# the demo and the tests. First `up` fetches the broker's jars from Maven Central with mvn
# into .cache/kafka/libs (ignored); data and logs live in .cache/kafka too.
#
#   deploy/local/kafka.sh up|down|status|fetch|reset
#
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), KAFKA_HEAP (512m),
# STREAMWATCH_CACHE (<repo>/.cache), KAFKA_DIR (its kafka/: config, data, logs, pid of this
# broker; give a second broker a directory of its own), KAFKA_LIBS (its kafka/libs: the jars,
# shared by every broker).
#
# Authenticated listeners, for trying and testing SASL and TLS (off unless a port is given):
#   KAFKA_SASL_PORT       a SASL_PLAINTEXT listener on 127.0.0.1:<port>
#   KAFKA_SASL_SSL_PORT   a SASL_SSL listener on 127.0.0.1:<port>; needs KAFKA_SSL_KEYSTORE (PKCS12
#                         with the broker's key and a certificate for 127.0.0.1) and
#                         KAFKA_SSL_KEYSTORE_PASSWORD
#   KAFKA_SASL_USERS      user:password[,user:password...] (default streamwatch:streamwatch-secret;
#                         no , : " in them), accepted with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512
#                         (the SCRAM credentials are written when the data dir is formatted, so
#                         changing the users needs `reset`). The PLAINTEXT listener stays open for
#                         the broker's own traffic: point clients at the SASL port.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${STREAMWATCH_CACHE:-$repo/.cache}
cache=${KAFKA_DIR:-$root/kafka}
libs=${KAFKA_LIBS:-$root/kafka/libs}
data=$cache/data
logs=$cache/logs
pidfile=$cache/kafka.pid
port=${KAFKA_PORT:-9092}
cport=${KAFKA_CONTROLLER_PORT:-9093}
heap=${KAFKA_HEAP:-512m}
sasl_port=${KAFKA_SASL_PORT:-}
sasl_ssl_port=${KAFKA_SASL_SSL_PORT:-}
sasl_users=${KAFKA_SASL_USERS:-streamwatch:streamwatch-secret}

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

# the SASL listeners' lines of server.properties (nothing without KAFKA_SASL_PORT / _SASL_SSL_PORT)
sasl_props() {
  local names=() plain="org.apache.kafka.common.security.plain.PlainLoginModule required" u
  [[ -n $sasl_port ]] && names+=(sasl_plaintext)
  [[ -n $sasl_ssl_port ]] && names+=(sasl_ssl)
  (( ${#names[@]} )) || return 0
  IFS=, read -ra users <<<"$sasl_users"
  for u in "${users[@]}"; do plain+=" user_${u%%:*}=\"${u#*:}\""; done
  echo "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
  for n in "${names[@]}"; do
    echo "listener.name.$n.plain.sasl.jaas.config=$plain;"
    echo "listener.name.$n.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
    echo "listener.name.$n.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
  done
  if [[ -n $sasl_ssl_port ]]; then
    echo "listener.name.sasl_ssl.ssl.keystore.type=PKCS12"
    echo "listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_SSL_KEYSTORE"
    echo "listener.name.sasl_ssl.ssl.keystore.password=${KAFKA_SSL_KEYSTORE_PASSWORD:-}"
    echo "listener.name.sasl_ssl.ssl.key.password=${KAFKA_SSL_KEYSTORE_PASSWORD:-}"
  fi
}

# --add-scram arguments of `format`: every user under both SCRAM mechanisms
scram_args() {
  [[ -n $sasl_port || -n $sasl_ssl_port ]] || return 0
  IFS=, read -ra users <<<"$sasl_users"
  for u in "${users[@]}"; do
    for m in SCRAM-SHA-256 SCRAM-SHA-512; do printf '%s\n' --add-scram "$m=[name=${u%%:*},password=${u#*:}]"; done
  done
}

write_config() {
  if [[ -n $sasl_ssl_port && -z ${KAFKA_SSL_KEYSTORE:-} ]]; then log "KAFKA_SASL_SSL_PORT needs KAFKA_SSL_KEYSTORE"; exit 2; fi
  mkdir -p "$cache" "$logs"
  local listeners="PLAINTEXT://127.0.0.1:$port" map="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  [[ -n $sasl_port ]] && { listeners+=",SASL_PLAINTEXT://127.0.0.1:$sasl_port"; map+=",SASL_PLAINTEXT:SASL_PLAINTEXT"; }
  [[ -n $sasl_ssl_port ]] && { listeners+=",SASL_SSL://127.0.0.1:$sasl_ssl_port"; map+=",SASL_SSL:SASL_SSL"; }
  cat >"$cache/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners,CONTROLLER://127.0.0.1:$cport
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$map
$(sasl_props)
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
  chmod 600 "$cache/server.properties"  # SASL users' passwords, the keystore password
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
    local scram=()
    mapfile -t scram < <(scram_args)
    java_run kafka.tools.StorageTool format -t "$cid" -c "$cache/server.properties" "${scram[@]}" >/dev/null
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
