#!/usr/bin/env bash
# Ferry's main job on one machine: the real Pulsar broker plus a Ferry node.
#
#   deploy/local/quickstart.sh        install what is missing, start the broker, build and start
#                                     a node on 127.0.0.1:7600, print where everything is
#   deploy/local/quickstart.sh down   stop the node and the broker this script started
#
# State (pid file, logs) lives in FERRY_LOCAL_STATE_DIR (default ~/.cache/ferry/local).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state_dir=${FERRY_LOCAL_STATE_DIR:-${FERRY_CACHE_DIR:-$HOME/.cache/ferry}/local}
listen=${FERRY_LISTEN:-127.0.0.1:7600}
admin_url=http://$listen
ferry=$repo/target/debug/ferry
pid_file=$state_dir/node-1.pid
log_file=$state_dir/node-1.log

log() { printf 'quickstart: %s\n' "$*" >&2; }

node_pid() {
  [[ -f $pid_file ]] || return 1
  local pid
  pid=$(cat "$pid_file")
  kill -0 "$pid" 2>/dev/null && grep -q ferry "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

up() {
  "$repo/deploy/install-deps.sh"
  "$repo/deploy/pulsar/standalone.sh" start
  log "building ferry"
  (cd "$repo" && cargo build --locked -p ferry-node --bin ferry)
  mkdir -p "$state_dir"
  if pid=$(node_pid); then
    log "node already running (pid $pid)"
  else
    log "starting a node on $listen (log: $log_file)"
    setsid nohup "$ferry" serve --listen "$listen" >"$log_file" 2>&1 </dev/null &
    echo $! > "$pid_file"
  fi
  local deadline=$(( SECONDS + 30 ))
  until "$ferry" version --admin-url "$admin_url" >/dev/null 2>&1; do
    if ! node_pid >/dev/null; then
      log "the node exited; last lines of $log_file:"
      tail -n 30 "$log_file" >&2
      exit 1
    fi
    if (( SECONDS >= deadline )); then
      log "the node did not answer at $admin_url within 30 s; last lines of $log_file:"
      tail -n 30 "$log_file" >&2
      exit 1
    fi
    sleep 0.2
  done
  "$ferry" version --admin-url "$admin_url"
  cat <<TXT

Ferry is up:
  broker      pulsar://127.0.0.1:6650   (admin http://127.0.0.1:8080)
  ferry node  $admin_url   (pid $(cat "$pid_file"), log $log_file)
Stop everything with: deploy/local/quickstart.sh down
TXT
}

down() {
  if pid=$(node_pid); then
    log "stopping the node (pid $pid)"
    kill -TERM "$pid"
    local deadline=$(( SECONDS + 20 ))
    while kill -0 "$pid" 2>/dev/null; do
      if (( SECONDS >= deadline )); then kill -KILL "$pid" 2>/dev/null || true; break; fi
      sleep 0.2
    done
  fi
  rm -f "$pid_file"
  "$repo/deploy/pulsar/standalone.sh" stop
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
