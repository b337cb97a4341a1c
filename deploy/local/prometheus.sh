#!/usr/bin/env bash
# A real Prometheus (Debian package `prometheus`, installed if missing) on 127.0.0.1:9090,
# scraping the worker at 127.0.0.1:9400 (deploy/prometheus/prometheus.yml). Data in .cache.
#
#   deploy/local/prometheus.sh install|up|down|status
#
# Environment: PROMETHEUS_PORT (9090), PROMETHEUS_CONFIG (deploy/prometheus/prometheus.yml).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${STREAMWATCH_CACHE:-$repo/.cache}/prometheus
pidfile=$cache/prometheus.pid
port=${PROMETHEUS_PORT:-9090}
config=${PROMETHEUS_CONFIG:-$repo/deploy/prometheus/prometheus.yml}

log() { printf 'prometheus.sh: %s\n' "$*" >&2; }
running() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

install() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then return 0; fi
  log "installing Debian's prometheus package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # the package may start its own service on :9090; this script runs its own instance
  if command -v service >/dev/null; then service prometheus stop >/dev/null 2>&1 || true; fi
  pkill -x prometheus 2>/dev/null || true
}

up() {
  if running; then log "already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  install
  mkdir -p "$cache/data"
  promtool check config "$config" >/dev/null
  nohup prometheus --config.file="$config" --storage.tsdb.path="$cache/data" \
    --web.listen-address="127.0.0.1:$port" --web.enable-lifecycle >"$cache/prometheus.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 60); do
    if ! running; then log "prometheus exited; see $cache/prometheus.log"; tail -n 20 "$cache/prometheus.log" >&2; exit 1; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "up on http://127.0.0.1:$port (pid $(cat "$pidfile")), scraping per $config"; return 0
    fi
    sleep 0.5
  done
  log "prometheus did not start in 30 s"; exit 1
}

down() {
  if ! running; then log "not running"; rm -f "$pidfile"; return 0; fi
  kill "$(cat "$pidfile")"; rm -f "$pidfile"; log "stopped"
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) if running; then echo "running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; else echo stopped; exit 3; fi ;;
  *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac
