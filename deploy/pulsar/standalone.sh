#!/usr/bin/env bash
# Runs a real Apache Pulsar standalone broker on 127.0.0.1 for Ferry's tests and quickstart.
#
#   deploy/pulsar/standalone.sh start    fetch (once) and start; returns when the broker is healthy
#   deploy/pulsar/standalone.sh stop     stop the broker this script started (pid file)
#   deploy/pulsar/standalone.sh status   exit 0 when our broker runs and is healthy
#
# The server distribution comes from Maven Central through `mvn` and is cached outside the
# repository (FERRY_CACHE_DIR, default ~/.cache/ferry), so later runs skip the download.
# The broker's state (pid file, logs, data) lives in FERRY_PULSAR_STATE_DIR.
#
# Settings (environment):
#   FERRY_CACHE_DIR          cache for the distribution           (~/.cache/ferry)
#   FERRY_PULSAR_STATE_DIR   pid file, logs, data, generated conf  ($FERRY_CACHE_DIR/pulsar-standalone)
#   FERRY_PULSAR_PORT        binary protocol port                  (6650)
#   FERRY_PULSAR_HTTP_PORT   admin REST port                       (8080)
#   FERRY_PULSAR_TLS_PORT    binary protocol port with TLS         (6651; certificates for
#                            127.0.0.1/localhost signed by a test CA in $state_dir/tls)
#   FERRY_PULSAR_START_TIMEOUT  seconds to wait for health         (240)
#   PULSAR_MEM               JVM memory flags                      (sized for 2 cores / 24 GiB)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=$(tr -d '[:space:]' < "$here/VERSION")
cache_dir=${FERRY_CACHE_DIR:-$HOME/.cache/ferry}
state_dir=${FERRY_PULSAR_STATE_DIR:-$cache_dir/pulsar-standalone}
port=${FERRY_PULSAR_PORT:-6650}
http_port=${FERRY_PULSAR_HTTP_PORT:-8080}
tls_port=${FERRY_PULSAR_TLS_PORT:-6651}
start_timeout=${FERRY_PULSAR_START_TIMEOUT:-240}
m2_dir=$cache_dir/m2
dist_root=$cache_dir/pulsar
home=$dist_root/apache-pulsar-$version
pid_file=$state_dir/pulsar.pid
tls_dir=$state_dir/tls
log_dir=$state_dir/logs
console_log=$log_dir/standalone-console.log
health_url="http://127.0.0.1:$http_port/admin/v2/brokers/health"

log() { printf 'pulsar-standalone: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

our_pid() {
  [[ -f $pid_file ]] || return 1
  local pid
  pid=$(cat "$pid_file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  # The pid must still be a Pulsar JVM: a recycled pid of another process is not ours.
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'PulsarStandaloneStarter\|PulsarVersionStarter\|standalone'; then
    echo "$pid"
    return 0
  fi
  return 1
}

healthy() {
  [[ $(curl -s --max-time 5 "$health_url" 2>/dev/null || true) == ok ]]
}

# Picks a JDK the distribution accepts (Pulsar 4.0 needs Java 17 or later).
pick_java() {
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
    return 0
  fi
  local candidate
  for candidate in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64 /usr/lib/jvm/java-21-openjdk-amd64; do
    if [[ -x $candidate/bin/java ]]; then
      export JAVA_HOME=$candidate
      return 0
    fi
  done
  command -v java >/dev/null || die "no java found: install a JDK 17 or later (apt-get install openjdk-17-jre-headless)"
}

fetch() {
  if [[ -x $home/bin/pulsar ]]; then
    return 0
  fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven)"
  local artifact=org.apache.pulsar:pulsar-server-distribution:$version:tar.gz:bin
  local tarball=$m2_dir/org/apache/pulsar/pulsar-server-distribution/$version/pulsar-server-distribution-$version-bin.tar.gz
  if [[ ! -f $tarball ]]; then
    log "fetching $artifact from Maven Central"
    mvn -B -q -Dstyle.color=never dependency:get -Dmaven.repo.local="$m2_dir" -Dartifact="$artifact" -Dtransitive=false \
      || die "mvn could not fetch $artifact"
  fi
  [[ -f $tarball ]] || die "mvn finished but $tarball is missing"
  log "unpacking $tarball"
  mkdir -p "$dist_root"
  local tmp
  tmp=$(mktemp -d "$dist_root/unpack.XXXXXX")
  tar xzf "$tarball" -C "$tmp"
  rm -rf "$home"
  mv "$tmp/apache-pulsar-$version" "$home"
  rmdir "$tmp"
}

# A test certificate authority and a broker certificate for 127.0.0.1 and localhost, made once.
# Clients trust $tls_dir/ca.cert.pem.
make_certificates() {
  [[ -f $tls_dir/broker.key-pk8.pem && -f $tls_dir/ca.cert.pem ]] && return 0
  command -v openssl >/dev/null || die "openssl not found: install it (apt-get install openssl)"
  log "making test TLS certificates in $tls_dir"
  mkdir -p "$tls_dir"
  (
    cd "$tls_dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ferry test ca" \
      -keyout ca.key.pem -out ca.cert.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout broker.key.pem -out broker.csr.pem 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > broker.ext
    openssl x509 -req -in broker.csr.pem -CA ca.cert.pem -CAkey ca.key.pem -CAcreateserial \
      -days 3650 -extfile broker.ext -out broker.cert.pem 2>/dev/null
    # The broker reads its key in PKCS#8.
    openssl pkcs8 -topk8 -nocrypt -in broker.key.pem -out broker.key-pk8.pem
  ) || die "could not make TLS certificates in $tls_dir"
}

write_config() {
  local conf=$state_dir/standalone.conf
  cp "$home/conf/standalone.conf" "$conf"
  # Later keys win in a Java properties file: our settings override the shipped defaults.
  cat >> "$conf" <<CONF

# --- Ferry test broker overrides (deploy/pulsar/standalone.sh) ---
bindAddress=127.0.0.1
advertisedAddress=127.0.0.1
brokerServicePort=$port
webServicePort=$http_port
# Effectively-once sources rely on broker-side deduplication.
brokerDeduplicationEnabled=true
# Tests and checkers read topics long after writing them.
brokerDeleteInactiveTopicsEnabled=false
# TLS on a second port, for the TLS paths of Ferry's Pulsar clients.
brokerServicePortTls=$tls_port
tlsCertificateFilePath=$tls_dir/broker.cert.pem
tlsKeyFilePath=$tls_dir/broker.key-pk8.pem
tlsTrustCertsFilePath=$tls_dir/ca.cert.pem
CONF
  echo "$conf"
}

start() {
  if pid=$(our_pid); then
    if healthy; then
      log "already running (pid $pid), healthy at $health_url"
      return 0
    fi
    log "pid $pid is running but not healthy yet; waiting"
    wait_healthy "$pid"
    return 0
  fi
  if healthy; then
    log "a broker this script did not start already answers at $health_url; leaving it alone and using it"
    return 0
  fi
  pick_java
  fetch
  mkdir -p "$state_dir" "$log_dir" "$state_dir/data"
  make_certificates
  local conf
  conf=$(write_config)
  log "starting Pulsar $version (JAVA_HOME=${JAVA_HOME:-system}) on 127.0.0.1:$port, http $http_port"
  (
    cd "$state_dir"
    export PULSAR_LOG_DIR=$log_dir
    export PULSAR_MEM=${PULSAR_MEM:-"-Xms512m -Xmx1536m -XX:MaxDirectMemorySize=1536m"}
    export PULSAR_STANDALONE_CONF=$conf
    exec setsid nohup "$home/bin/pulsar" standalone \
      --config "$conf" \
      --no-functions-worker --no-stream-storage \
      --advertised-address 127.0.0.1 \
      --bookkeeper-dir "$state_dir/data/bookkeeper" \
      --metadata-dir "$state_dir/data/metadata" \
      >"$console_log" 2>&1 </dev/null
  ) &
  local pid=$!
  echo "$pid" > "$pid_file"
  wait_healthy "$pid"
}

wait_healthy() {
  local pid=$1 started=$SECONDS
  while (( SECONDS - started < start_timeout )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker process $pid exited during start-up; last lines of $console_log:"
      tail -n 60 "$console_log" >&2 || true
      rm -f "$pid_file"
      exit 1
    fi
    if healthy; then
      log "healthy after $(( SECONDS - started )) s (pid $pid): pulsar://127.0.0.1:$port, pulsar+ssl://127.0.0.1:$tls_port (CA $tls_dir/ca.cert.pem), http://127.0.0.1:$http_port"
      return 0
    fi
    sleep 1
  done
  log "not healthy within ${start_timeout} s; last lines of $console_log:"
  tail -n 60 "$console_log" >&2 || true
  exit 1
}

stop() {
  local pid
  if ! pid=$(our_pid); then
    log "not running (no live pid in $pid_file)"
    rm -f "$pid_file"
    return 0
  fi
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local started=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS - started >= 60 )); then
      log "pid $pid still alive after 60 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5
  done
  rm -f "$pid_file"
  log "stopped"
}

status() {
  local pid
  if pid=$(our_pid); then
    if healthy; then
      echo "running (pid $pid), healthy: pulsar://127.0.0.1:$port http://127.0.0.1:$http_port"
      return 0
    fi
    echo "running (pid $pid), not healthy at $health_url"
    return 1
  fi
  echo "not running"
  return 3
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
