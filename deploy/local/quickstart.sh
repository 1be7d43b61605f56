#!/usr/bin/env bash
# Ferry's main job on one machine: the real Pulsar broker plus a 3-node Ferry cluster running a
# demo pipeline.
#
#   deploy/local/quickstart.sh        install what is missing, start the broker (and PostgreSQL,
#                                     which the postgres sink's tests use), build ferry, start
#                                     node 1 (--bootstrap) on 127.0.0.1:7601 and nodes 2 and 3
#                                     (--join) on 7602 and 7603, create the demo pipeline
#                                     (datagen source -> a ferry-demo-<time> topic -> postgres sink
#                                     into table ferry_demo, effectively-once) and show it
#   deploy/local/quickstart.sh down   stop the nodes, PostgreSQL and the broker
#
# State (pid files, logs, each node's data dir) lives in FERRY_LOCAL_STATE_DIR
# (default ~/.cache/ferry/local); nodes restarted by a second run keep their data.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state_dir=${FERRY_LOCAL_STATE_DIR:-${FERRY_CACHE_DIR:-$HOME/.cache/ferry}/local}
base_port=${FERRY_LOCAL_BASE_PORT:-7600}
nodes=3
ferry=$repo/target/debug/ferry

log() { printf 'quickstart: %s\n' "$*" >&2; }

address() { echo "127.0.0.1:$(( base_port + $1 ))"; }

node_pid() { # node number
  local pid_file=$state_dir/node-$1.pid pid
  [[ -f $pid_file ]] || return 1
  pid=$(cat "$pid_file")
  kill -0 "$pid" 2>/dev/null && grep -q ferry "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

spawn_node() { # node number
  local n=$1 log_file=$state_dir/node-$1.log
  if pid=$(node_pid "$n"); then
    log "node $n already running (pid $pid)"
    return 0
  fi
  local role=(--bootstrap)
  (( n > 1 )) && role=(--join "$(address 1)")
  log "starting node $n on $(address "$n") (log: $log_file)"
  : > "$log_file"
  setsid nohup "$ferry" serve --node-id "$n" --listen "$(address "$n")" \
    --data-dir "$state_dir/node-$n" \
    --pulsar-url pulsar://127.0.0.1:6650 --pulsar-admin-url http://127.0.0.1:8080 \
    "${role[@]}" >"$log_file" 2>&1 </dev/null &
  echo $! > "$state_dir/node-$n.pid"
}

wait_node() { # node number
  local n=$1 log_file=$state_dir/node-$1.log
  # The node prints this line once it is a member of the cluster.
  local deadline=$(( SECONDS + 60 ))
  until grep -q "is in its cluster" "$log_file" 2>/dev/null; do
    if ! node_pid "$n" >/dev/null; then
      log "node $n exited; last lines of $log_file:"
      tail -n 30 "$log_file" >&2
      exit 1
    fi
    if (( SECONDS >= deadline )); then
      log "node $n did not join within 60 s; last lines of $log_file:"
      tail -n 30 "$log_file" >&2
      exit 1
    fi
    sleep 0.2
  done
}

admin() { "$ferry" "$@" --admin-url "http://$(address 1)"; }

pg_url=
psql_demo() { # SQL
  PGPASSWORD=ferry psql -X -q -t -A -h "$pg_host" -p "$pg_port" -U ferry -d ferry -c "$1"
}

demo() {
  # A topic per demo pipeline: broker deduplication remembers the sequence ids of an earlier
  # cluster's effectively-once producer of the same name.
  local topic=persistent://public/default/ferry-demo-$(date +%s)
  pg_url=$("$repo/deploy/postgres/postgres.sh" url)
  local hostport=${pg_url#*@}; hostport=${hostport%%/*}
  pg_host=${hostport%%:*}; pg_port=${hostport##*:}
  psql_demo "CREATE TABLE IF NOT EXISTS ferry_demo (idx bigint, seed bigint, data text)"
  if admin sinks get --name demo-pg >/dev/null 2>&1; then
    log "demo pipeline already created"
  else
    log "creating the demo pipeline: datagen -> $topic -> PostgreSQL table ferry_demo"
    # A new cluster starts the demo afresh: rows and the sink's stored position (and epoch) left
    # by an earlier cluster would not match this one's topic and epochs.
    psql_demo "TRUNCATE ferry_demo"
    psql_demo "DO \$\$ BEGIN IF to_regclass('ferry_offsets') IS NOT NULL THEN
      DELETE FROM ferry_offsets WHERE instance LIKE 'public/default/demo-pg#%'; END IF; END \$\$"
    admin sinks create --name demo-pg --sink-type postgres --inputs "$topic" \
      --processing-guarantees EFFECTIVELY_ONCE \
      --sink-config "{\"url\": \"postgres://$pg_host:$pg_port/ferry\", \"user\": \"ferry\",
        \"password\": \"ferry\", \"table\": \"ferry_demo\",
        \"columns\": {\"index\": \"idx\", \"seed\": \"seed\", \"data\": \"data\"}}" >/dev/null
    admin sources create --name demo-gen --source-type datagen \
      --destination-topic-name "$topic" --processing-guarantees EFFECTIVELY_ONCE \
      --source-config '{"rate": 50, "payload_size": 80}' >/dev/null
  fi
  local deadline=$(( SECONDS + 60 )) rows=0
  until (( rows >= 20 )); do
    rows=$(psql_demo "SELECT count(*) FROM ferry_demo")
    if (( SECONDS >= deadline )); then
      log "the demo pipeline wrote nothing to PostgreSQL within 60 s; its status:"
      admin sources status --name demo-gen >&2 || true
      admin sinks status --name demo-pg >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  echo
  admin sources status --name demo-gen
  echo
  admin sinks status --name demo-pg
  echo
  echo "The demo pipeline writes 50 rows/s into table ferry_demo ($pg_url); the newest:"
  psql_demo "SELECT idx, seed, left(data, 24) FROM ferry_demo ORDER BY idx DESC LIMIT 3"
}

up() {
  "$repo/deploy/install-deps.sh"
  "$repo/deploy/pulsar/standalone.sh" start
  "$repo/deploy/postgres/postgres.sh" start
  log "building ferry"
  (cd "$repo" && cargo build --locked -p ferry-node --bin ferry)
  mkdir -p "$state_dir"
  if [[ -d $state_dir/node-$nodes ]]; then
    # A restart: a member needs a quorum of its peers back before it is in its cluster.
    for n in $(seq 1 "$nodes"); do spawn_node "$n"; done
    for n in $(seq 1 "$nodes"); do wait_node "$n"; done
  else
    # A first start: node 1 bootstraps the cluster, then each node joins in turn.
    for n in $(seq 1 "$nodes"); do spawn_node "$n"; wait_node "$n"; done
  fi
  "$ferry" version --admin-url "http://$(address 1)"
  demo
  cat <<TXT

Ferry is up:
  broker  pulsar://127.0.0.1:6650   pulsar+ssl://127.0.0.1:6651   admin http://127.0.0.1:8080
TXT
  for n in $(seq 1 "$nodes"); do
    echo "  node $n  http://$(address "$n")   (pid $(cat "$state_dir/node-$n.pid"), log $state_dir/node-$n.log)"
  done
  cat <<TXT
Try: $ferry sources list --admin-url http://$(address 2)
     $ferry sinks status --name demo-pg --admin-url http://$(address 3) --output json
     $ferry sources stop --name demo-gen --admin-url http://$(address 1)
Stop everything with: deploy/local/quickstart.sh down
TXT
}

down() {
  for n in $(seq "$nodes" -1 1); do
    if pid=$(node_pid "$n"); then
      log "stopping node $n (pid $pid)"
      kill -TERM "$pid"
      local deadline=$(( SECONDS + 20 ))
      while kill -0 "$pid" 2>/dev/null; do
        if (( SECONDS >= deadline )); then kill -KILL "$pid" 2>/dev/null || true; break; fi
        sleep 0.2
      done
    fi
    rm -f "$state_dir/node-$n.pid"
  done
  "$repo/deploy/postgres/postgres.sh" stop || true
  "$repo/deploy/pulsar/standalone.sh" stop
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
