#!/usr/bin/env bash
# Runs a real PostgreSQL server on 127.0.0.1 for Ferry's tests (the `postgres` sink).
#
#   deploy/postgres/postgres.sh start    install (once) and start; returns when it accepts connections
#   deploy/postgres/postgres.sh stop     stop the server this script started (its data directory)
#   deploy/postgres/postgres.sh status   exit 0 when our server runs and accepts connections
#   deploy/postgres/postgres.sh url      print the URL tests connect to (FERRY_TEST_PG_URL)
#
# PostgreSQL comes from Debian's packages (apt-get) when no server binaries are installed. The
# cluster is our own (initdb), not Debian's `main` one: it listens on 127.0.0.1 only, its unix
# socket lives in its own directory, and it has a user `ferry` (password `ferry`, password
# authentication over TCP) owning a database `ferry`. Tests reach it at
# postgres://ferry:ferry@127.0.0.1:<port>/ferry.
#
# PostgreSQL refuses to run as root: as root, initdb and the server run as the `postgres` OS
# user, which must own the data directory and be able to reach it. When it cannot traverse the
# default state directory (root's home is usually mode 700), the state goes to
# /var/lib/postgresql/ferry instead (the postgres user's home) and the script says so.
#
# Settings (environment):
#   FERRY_CACHE_DIR           cache root                               (~/.cache/ferry)
#   FERRY_PG_STATE_DIR        data directory, log, socket directory    ($FERRY_CACHE_DIR/postgres)
#   FERRY_PG_PORT             TCP port                                 (5432; 55432 when 5432 is
#                             taken by another server; a port chosen once is kept)
#   FERRY_PG_START_TIMEOUT    seconds to wait until it accepts connections  (60)
set -euo pipefail

cache_dir=${FERRY_CACHE_DIR:-$HOME/.cache/ferry}
state_dir=${FERRY_PG_STATE_DIR:-$cache_dir/postgres}
start_timeout=${FERRY_PG_START_TIMEOUT:-60}
fallback_port=55432
database=ferry
user=ferry
password=ferry

log() { printf 'postgres: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

sudo=
if (( $(id -u) != 0 )); then sudo=sudo; fi

# Runs a command as the OS user the server runs as: `postgres` when we are root, else ourselves.
as_server_user() {
  if (( $(id -u) == 0 )); then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Finds the newest installed server's binaries (Debian keeps them out of PATH).
find_bin_dir() {
  local candidate best=
  for candidate in /usr/lib/postgresql/*/bin; do
    [[ -x $candidate/initdb && -x $candidate/pg_ctl && -x $candidate/postgres ]] || continue
    if [[ -z $best ]] || (( ${candidate//[^0-9]/} > ${best//[^0-9]/} )); then
      best=$candidate
    fi
  done
  [[ -n $best ]] || return 1
  echo "$best"
}

install_server() {
  if find_bin_dir >/dev/null; then
    return 0
  fi
  log "installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # Without this, the package creates and starts Debian's own `main` cluster on 5432.
  $sudo apt-get install -y -qq --no-install-recommends postgresql-common
  $sudo sed -i 's/^#\?\s*create_main_cluster\s*=.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
  $sudo apt-get install -y -qq --no-install-recommends postgresql postgresql-client
  find_bin_dir >/dev/null || die "apt-get finished but no /usr/lib/postgresql/*/bin/initdb exists"
}

# As root, moves the state to the postgres user's home when that user cannot reach ours.
pick_state_dir() {
  (( $(id -u) == 0 )) || return 0
  getent passwd postgres >/dev/null || die "no postgres OS user (is the postgresql package installed?)"
  mkdir -p "$state_dir"
  if ! runuser -u postgres -- test -x "$state_dir"; then
    local fallback=/var/lib/postgresql/ferry
    if [[ -n ${FERRY_PG_STATE_DIR:-} ]]; then
      die "the postgres OS user cannot reach FERRY_PG_STATE_DIR=$state_dir (a parent directory is not traversable)"
    fi
    rmdir "$state_dir" 2>/dev/null || true
    state_dir=$fallback
  fi
}

set_paths() {
  data_dir=$state_dir/data
  socket_dir=$state_dir/run
  log_file=$state_dir/postgres.log
  port_file=$state_dir/port
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ours_running() {
  [[ -f $data_dir/PG_VERSION ]] && as_server_user "$bin_dir/pg_ctl" status -D "$data_dir" >/dev/null 2>&1
}

ready() {
  "$bin_dir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1
}

# The port: FERRY_PG_PORT, else the one this cluster used before, else 5432 when free.
choose_port() {
  if [[ -n ${FERRY_PG_PORT:-} ]]; then
    port=$FERRY_PG_PORT
  elif [[ -f $port_file ]]; then
    port=$(cat "$port_file")
  else
    port=5432
  fi
  ours_running && return 0
  if port_in_use "$port"; then
    [[ -z ${FERRY_PG_PORT:-} ]] || die "127.0.0.1:$port (FERRY_PG_PORT) is taken by another server"
    log "127.0.0.1:$port is taken by another server; using $fallback_port"
    port=$fallback_port
    port_in_use "$port" && die "127.0.0.1:$port is taken too; set FERRY_PG_PORT to a free port"
  fi
  return 0
}

url() {
  echo "postgres://$user:$password@127.0.0.1:$port/$database"
}

init_cluster() {
  [[ -f $data_dir/PG_VERSION ]] && return 0
  log "creating a cluster in $data_dir"
  mkdir -p "$data_dir"
  if (( $(id -u) == 0 )); then chown postgres:postgres "$state_dir" "$data_dir"; fi
  chmod 700 "$data_dir"
  local init_log=$state_dir/initdb.log
  as_server_user "$bin_dir/initdb" -D "$data_dir" --username=postgres --encoding=UTF8 \
    --locale=C --auth-local=peer --auth-host=scram-sha-256 >"$init_log" 2>&1 || {
    log "initdb failed; last lines of $init_log:"
    tail -n 30 "$init_log" >&2 || true
    exit 1
  }
  # The settings start() rewrites each time (port, addresses) live in their own file.
  echo "include_if_exists = 'ferry.conf'" | as_server_user tee -a "$data_dir/postgresql.conf" >/dev/null
}

write_settings() {
  mkdir -p "$socket_dir"
  if (( $(id -u) == 0 )); then chown postgres:postgres "$state_dir" "$socket_dir"; fi
  as_server_user tee "$data_dir/ferry.conf" >/dev/null <<CONF
# Written by deploy/postgres/postgres.sh on every start.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$socket_dir'
password_encryption = 'scram-sha-256'
CONF
  echo "$port" > "$port_file"
}

# Creates the `ferry` user and database when missing (runs on every start: cheap, idempotent).
create_user_and_database() {
  as_server_user "$bin_dir/psql" -X -q -v ON_ERROR_STOP=1 -h "$socket_dir" -p "$port" \
    -U postgres -d postgres >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') THEN
    CREATE ROLE $user LOGIN PASSWORD '$password';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $database OWNER $user'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$database') \gexec
SQL
}

wait_ready() {
  local started=$SECONDS
  while (( SECONDS - started < start_timeout )); do
    if ready; then
      return 0
    fi
    if ! ours_running; then
      log "the server exited during start-up; last lines of $log_file:"
      tail -n 40 "$log_file" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "not accepting connections within ${start_timeout} s; last lines of $log_file:"
  tail -n 40 "$log_file" >&2 || true
  exit 1
}

start() {
  local started=$SECONDS
  install_server
  bin_dir=$(find_bin_dir)
  pick_state_dir
  set_paths
  choose_port
  if ours_running; then
    wait_ready
    log "already running ($data_dir), accepting connections: $(url)"
    url
    return 0
  fi
  init_cluster
  write_settings
  log "starting PostgreSQL ($bin_dir) on 127.0.0.1:$port, log $log_file"
  if (( $(id -u) == 0 )); then touch "$log_file" && chown postgres:postgres "$log_file"; fi
  as_server_user "$bin_dir/pg_ctl" start -W -D "$data_dir" -l "$log_file" >/dev/null
  wait_ready
  create_user_and_database
  log "accepting connections after $(( SECONDS - started )) s: $(url)"
  url
}

stop() {
  bin_dir=$(find_bin_dir) || { log "not installed, nothing to stop"; return 0; }
  pick_state_dir
  set_paths
  if ! ours_running; then
    log "not running ($data_dir)"
    return 0
  fi
  log "stopping the server of $data_dir"
  as_server_user "$bin_dir/pg_ctl" stop -D "$data_dir" -m fast -t 60 >/dev/null
  log "stopped"
}

status() {
  bin_dir=$(find_bin_dir) || { echo "not installed"; return 3; }
  pick_state_dir
  set_paths
  port=$(cat "$port_file" 2>/dev/null || echo "${FERRY_PG_PORT:-5432}")
  if ours_running; then
    if ready; then
      echo "running ($data_dir), accepting connections: $(url)"
      return 0
    fi
    echo "running ($data_dir), not accepting connections on 127.0.0.1:$port"
    return 1
  fi
  echo "not running"
  return 3
}

print_url() {
  pick_state_dir
  set_paths
  port=${FERRY_PG_PORT:-$(cat "$port_file" 2>/dev/null || echo 5432)}
  url
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) print_url ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
