#!/usr/bin/env bash
# Fetch, start and stop real Elasticsearch (or OpenSearch) nodes for lumberd's tests.
# See tests/es/README.md for what is fetched, where it is cached and
# which features each distribution has.
#
#   es.sh fetch                     resolve with Maven + verify + unpack (cached); prints the home
#   es.sh start DIR [-E k=v ...]    start a node under DIR; prints http://127.0.0.1:PORT last
#                                   (https:// with -E xpack.security.http.ssl.enabled=true)
#   es.sh cluster DIR N [-E k=v ...]  start N nodes forming one cluster in DIR/node-1..N;
#                                   prints their URLs, comma-separated, last
#   es.sh stop DIR                  SIGTERM, wait (deadline), then SIGKILL (a cluster DIR: every node)
#   es.sh kill DIR                  SIGKILL (simulated crash); data stays in DIR
#   es.sh restart DIR [-E k=v ...]  stop + start on the same port and data dir
#   es.sh url DIR                   print the URL of the running node in DIR
#   es.sh watch PID DIR [--remove]  stop the node or cluster in DIR once process PID has exited
#                                   (and delete DIR)
#   es.sh stop-all                  stop every node started from this cache
#   es.sh adduser DIR USER PASS [ROLE]  file-realm user (for -E xpack.security.enabled=true)
#
# LUMBERD_ES_ENGINE=opensearch fetches and runs OpenSearch instead (LUMBERD_OS_VERSION).
set -euo pipefail

ES_VERSION="${LUMBERD_ES_VERSION:-8.11.3}"
OS_VERSION="${LUMBERD_OS_VERSION:-2.19.6}"
# set_engine NAME: which distribution is fetched and run (ENGINE, ES_ARTIFACT)
set_engine() {
  ENGINE=$1
  case "$ENGINE" in
    elasticsearch) ES_ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip" ;;
    opensearch) ES_ARTIFACT="org.opensearch.distribution.integ-test-zip:opensearch:$OS_VERSION:zip" ;;
    *) printf 'es.sh: error: LUMBERD_ES_ENGINE must be elasticsearch or opensearch, not %s\n' "$ENGINE" >&2; exit 2 ;;
  esac
}
set_engine "${LUMBERD_ES_ENGINE:-elasticsearch}"
CACHE_DIR="${LUMBERD_CACHE:-$HOME/.cache/lumberd}/es"
# The plugin that copies an artifact out of Maven's resolution, pinned so a fetch does
# not depend on which version the plugin-group metadata calls latest today.
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
START_TIMEOUT="${LUMBERD_ES_START_TIMEOUT:-180}" # seconds, whole start incl. yellow
STOP_TIMEOUT="${LUMBERD_ES_STOP_TIMEOUT:-30}"    # seconds of SIGTERM grace before SIGKILL
DEFAULT_JAVA_OPTS="-Xms512m -Xmx512m"
# sha1 of each zip as first fetched; Maven checks the checksum published beside the
# artifact (-C fails on a mismatch), this checks that the artifact is the one we tested
declare -A PINNED_SHA1=(
  [org.elasticsearch.distribution.integ-test-zip:elasticsearch:8.11.3:zip]=c3f349b6069f38321d3ec61891173da5e4d4be4c
  [org.elasticsearch.distribution.integ-test-zip:elasticsearch:8.11.1:zip]=5f51158f9da984a4c27f9ba25634f30bc96d81eb
  [org.opensearch.distribution.integ-test-zip:opensearch:2.19.6:zip]=8e071b0fee7911b226f68bdead8946002e6b6e36
)
# The server's main class, by which its process is recognised (see is_node_pid).
declare -A MAIN_CLASS=(
  [elasticsearch]=org.elasticsearch.server/org.elasticsearch.bootstrap.Elasticsearch
  [opensearch]=org.opensearch.bootstrap.OpenSearch
)
CLUSTER_NAME="lumberd-test"

log() { printf 'es.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

now() { date +%s; }

# ---------------------------------------------------------------- fetch ---

verify_zip() { # ZIP COORD -> ZIP matches ZIP.sha1 (Maven's verified checksum) and any pin
  local zip=$1 coord=$2 want got
  [[ -s "$zip" && -s "$zip.sha1" ]] || return 1
  want=$(awk '{print $1}' "$zip.sha1")
  got=$(sha1sum "$zip" | awk '{print $1}')
  [[ "$want" == "$got" ]] || { log "sha1 mismatch for $zip: want $want got $got"; return 1; }
  if [[ -n "${PINNED_SHA1[$coord]:-}" && "${PINNED_SHA1[$coord]}" != "$got" ]]; then
    log "sha1 of $zip is $got, but es.sh pins ${PINNED_SHA1[$coord]} for $coord"
    return 1
  fi
}

unzip_to() { # ZIP DEST
  if command -v unzip >/dev/null; then
    unzip -q "$1" -d "$2"
  else
    python3 - "$1" "$2" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for i in z.infolist():
        p = z.extract(i, sys.argv[2])
        mode = (i.external_attr >> 16) & 0o777
        if mode:
            os.chmod(p, mode)
PY
  fi
}

# fetch_zip GROUP:ARTIFACT:VERSION:zip -- sets FETCHED_HOME to the zip's top directory
# ARTIFACT-VERSION/, unpacked in the cache at $CACHE_DIR/GROUP/ (the cache key is the
# coordinate, so distributions of several projects sit side by side). Maven resolves the
# zip from whatever repositories its own settings name, with checksums enforced (-C),
# into a private local repository that is dropped once the zip is copied out; the zip
# (kept, with the checksum Maven verified) must also match its pin, if es.sh has one.
fetch_zip() {
  local coord=$1 group artifact version ext
  IFS=: read -r group artifact version ext <<<"$coord"
  [[ -n "$group" && -n "$artifact" && -n "$version" && "$ext" == zip ]] ||
    die "fetch_zip wants GROUP:ARTIFACT:VERSION:zip, got '$coord'"
  local dir="$CACHE_DIR/$group" name="$artifact-$version"
  FETCHED_HOME="$dir/$name"
  # the unpacked tree is renamed into place whole, so its presence means complete
  [[ -d "$FETCHED_HOME" ]] && return 0

  mkdir -p "$dir"
  exec 8>"$dir/.lock"
  flock 8
  # another process may have finished while we waited for the lock
  if [[ -d "$FETCHED_HOME" ]]; then
    exec 8>&-
    return 0
  fi
  # holding the lock: whatever a killed fetch left behind is no one's
  rm -rf "$dir"/.fetch.* "$dir"/.unpack.*

  local zip="$dir/$name.zip"
  if ! verify_zip "$zip" "$coord"; then
    command -v mvn >/dev/null || die "mvn is required to fetch $coord (install Maven)"
    rm -f "$zip" "$zip.sha1"
    local tmp t0
    tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
    t0=$(now)
    log "resolving $coord with Maven"
    # From an empty directory, so no pom.xml around the caller becomes the project.
    # Maven logs to stdout, es.sh's result channel: its lines go to stderr, without the
    # colour resets Debian's Maven 3.8 prints even in batch mode.
    (cd "$tmp" && mvn --batch-mode --quiet --no-transfer-progress --strict-checksums \
      -Dmaven.repo.local="$tmp/repository" \
      "$DEPENDENCY_PLUGIN:copy" -Dartifact="$coord" -DoutputDirectory="$tmp/out") 2>&1 |
      sed -u 's/\x1b\[[0-9;]*m//g' >&2 ||
      { rm -rf "$tmp"; die "Maven could not resolve $coord (see its errors above)"; }
    local published="$tmp/repository/${group//.//}/$artifact/$version/$name.zip.sha1"
    [[ -s "$tmp/out/$name.zip" && -s "$published" ]] ||
      { rm -rf "$tmp"; die "Maven resolved $coord but left no $name.zip with its .sha1"; }
    mv "$published" "$zip.sha1"
    mv "$tmp/out/$name.zip" "$zip"
    rm -rf "$tmp"
    verify_zip "$zip" "$coord" || { rm -f "$zip" "$zip.sha1"; die "checksum verification failed for $coord"; }
    log "resolved in $(( $(now) - t0 ))s; sha1 $(awk '{print $1}' "$zip.sha1") checked by Maven$([[ -n "${PINNED_SHA1[$coord]:-}" ]] && echo ' and against the pin')"
  fi

  local tmp
  tmp=$(mktemp -d "$dir/.unpack.XXXXXX")
  unzip_to "$zip" "$tmp"
  [[ -d "$tmp/$name" ]] || { rm -rf "$tmp"; die "$zip does not hold $name/"; }
  mv -T "$tmp/$name" "$FETCHED_HOME"
  rm -rf "$tmp"
  exec 8>&-
  log "unpacked to $FETCHED_HOME"
}

# Sets ES_HOME (and RESOLVED_VERSION); fetches and unpacks if needed.
do_fetch() {
  if [[ -n "${LUMBERD_ES_HOME:-}" ]]; then
    ES_HOME=$LUMBERD_ES_HOME RESOLVED_VERSION=custom
    [[ -x "$ES_HOME/bin/$ENGINE" ]] || die "LUMBERD_ES_HOME=$ES_HOME has no bin/$ENGINE"
    return
  fi
  fetch_zip "$ES_ARTIFACT"
  ES_HOME=$FETCHED_HOME RESOLVED_VERSION="$ENGINE $(cut -d: -f3 <<<"$ES_ARTIFACT")"
  [[ -x "$ES_HOME/bin/$ENGINE" ]] || die "$ES_HOME has no bin/$ENGINE"
}

# ----------------------------------------------------------------- java ---

java_major() { # JAVA_HOME -> major version or empty
  [[ -x "$1/bin/java" ]] || return 0
  "$1/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -1
}

find_java() {
  if [[ -n "${ES_JAVA_HOME:-}" ]]; then
    printf '%s\n' "$ES_JAVA_HOME"
    return
  fi
  local c m cands=()
  [[ -n "${JAVA_HOME:-}" ]] && cands+=("$JAVA_HOME")
  if command -v java >/dev/null; then
    cands+=("$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")")
  fi
  for c in /usr/lib/jvm/*17* /usr/lib/jvm/*21* /usr/lib/jvm/*; do [[ -d "$c" ]] && cands+=("$c"); done
  # Elasticsearch 8.11 and OpenSearch 2.19 run on Java 17..21 (they need the security
  # manager, gone in 24)
  for c in "${cands[@]}"; do
    m=$(java_major "$c")
    if [[ -n "$m" && "$m" -ge 17 && "$m" -le 23 ]]; then
      printf '%s\n' "$c"
      return
    fi
  done
  die "no Java 17..21 found; set ES_JAVA_HOME"
}

# ------------------------------------------------------------ processes ---

abs_dir() { mkdir -p "$1" && (cd "$1" && pwd -P); }

# Is PID an Elasticsearch server whose node dir is DIR? (guards against pid reuse)
is_node_pid() { # PID DIR
  local pid=$1 dir=$2 state
  [[ "$pid" =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ "$state" != Z && "$state" != X ]] || return 1
  local cmd
  cmd=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  grep -qxF -- "-Djava.io.tmpdir=$dir/tmp" <<<"$cmd" || return 1
  grep -qxF -e "${MAIN_CLASS[elasticsearch]}" -e "${MAIN_CLASS[opensearch]}" <<<"$cmd"
}

# pids of the Elasticsearch server (and any launcher) of DIR
node_pids() { # DIR
  local dir=$1 p pids=()
  if [[ -s "$dir/es.pid" ]]; then
    p=$(<"$dir/es.pid")
    is_node_pid "$p" "$dir" && pids+=("$p")
  fi
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ " ${pids[*]-} " == *" $p "* ]] && continue
    is_node_pid "$p" "$dir" && pids+=("$p")
  done
  [[ ${#pids[@]} -gt 0 ]] && printf '%s\n' "${pids[@]}"
  return 0
}

wait_gone() { # DEADLINE_SECONDS PID...
  local deadline=$(( $(now) + $1 )) p alive
  shift
  while :; do
    alive=()
    for p in "$@"; do
      if [[ -d /proc/$p ]] && [[ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]]; then
        alive+=("$p")
      fi
    done
    [[ ${#alive[@]} -eq 0 ]] && return 0
    [[ $(now) -ge $deadline ]] && return 1
    sleep 0.2
  done
}

signal_node() { # DIR SIGNAL GRACE
  local dir=$1 sig=$2 grace=$3 pids
  mapfile -t pids < <(node_pids "$dir")
  if [[ ${#pids[@]} -eq 0 ]]; then
    rm -f "$dir/es.pid"
    return 0
  fi
  kill "-$sig" "${pids[@]}" 2>/dev/null || true
  if ! wait_gone "$grace" "${pids[@]}"; then
    log "node in $dir did not exit within ${grace}s after SIG$sig; sending SIGKILL"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait_gone 30 "${pids[@]}" || die "node in $dir (pids ${pids[*]}) survived SIGKILL"
  fi
  rm -f "$dir/es.pid"
}

node_url() { # DIR -> URL of the running node, or fail
  local dir=$1
  [[ -n "$(node_pids "$dir")" ]] || return 1
  [[ -s "$dir/es.port" ]] || return 1
  local scheme=http
  [[ -s "$dir/es.scheme" ]] && scheme=$(<"$dir/es.scheme")
  printf '%s://127.0.0.1:%s\n' "$scheme" "$(<"$dir/es.port")"
}

# ---------------------------------------------------------------- start ---

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# a window of ports for ES to pick from, below the kernel's ephemeral range so
# that a port freed by `stop` is not taken by an outgoing connection before
# `restart` binds it again
port_window() {
  local lo=32768 base
  [[ -r /proc/sys/net/ipv4/ip_local_port_range ]] && lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range)
  if [[ "$lo" -gt 12000 ]]; then
    base=$(( 10000 + (RANDOM * 32768 + RANDOM) % (lo - 10100) ))
    printf '%s-%s\n' "$base" "$((base + 49))"
  else
    printf '0\n'
  fi
}

yaml_quote() { # string -> "string" (YAML double-quoted scalar)
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# parse "-E k=v", "-Ek=v", "k=v" into lines "k=v"
parse_settings() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -E) [[ $# -ge 2 ]] || die "-E needs key=value"; printf '%s\n' "$2"; shift 2 ;;
      -E*) printf '%s\n' "${1#-E}"; shift ;;
      *=*) printf '%s\n' "$1"; shift ;;
      *) die "unexpected argument '$1' (expected -E key=value)" ;;
    esac
  done
}

print_failure() { # DIR [console|server] -- tail of the launcher's or the server's log, to stderr
  local dir=$1 which=${2:-server} f
  f="$dir/logs/$CLUSTER_NAME.log"
  if [[ "$which" == console || ! -s "$f" ]]; then f="$dir/logs/console.log"; fi
  {
    echo "---- tail of $f ----"
    tail -n 60 "$f" 2>/dev/null || true
    echo "---- end of $f ----"
  } >&2
}

# DIR/config: a private copy of the distribution's config (the cache stays
# pristine), with the JVM's log paths made absolute (they are relative to the
# distribution's home otherwise)
ensure_config() { # DIR
  local dir=$1
  [[ -f "$dir/config/jvm.options" ]] && return 0
  rm -rf "$dir/config.tmp"
  cp -R "$ES_HOME/config" "$dir/config.tmp"
  sed -i \
    -e "s|file=logs/gc.log|file=$dir/logs/gc.log|" \
    -e "s|filecount=32,filesize=64m|filecount=2,filesize=16m|" \
    -e "s|HeapDumpPath=data|HeapDumpPath=$dir/logs|" \
    -e "s|ErrorFile=logs/|ErrorFile=$dir/logs/|" \
    "$dir/config.tmp/jvm.options"
  mv -T "$dir/config.tmp" "$dir/config"
}

# do_start DIR PORT_MODE ARGS...   PORT_MODE: "auto" (reuse saved port if free) or "same"
do_start() {
  local dir=$1 mode=$2
  shift 2
  local t0
  t0=$(now)
  do_fetch
  local java_home
  java_home=$(find_java)

  if [[ -n "$(node_pids "$dir")" ]]; then
    die "a node is already running in $dir ($(node_url "$dir" || echo '?')); stop it first"
  fi
  rm -f "$dir/es.pid"
  mkdir -p "$dir/data" "$dir/logs" "$dir/tmp"

  ensure_config "$dir"

  # settings: defaults, then saved/extra ones (later wins); all go into the yml
  local -A settings=()
  local order=() kv k
  add_setting() {
    local key=${1%%=*} val=${1#*=}
    [[ "$1" == *=* && "$key" =~ ^[A-Za-z0-9_.\-]+$ ]] || die "bad setting '$1' (want key=value)"
    [[ -v "settings[$key]" ]] || order+=("$key")
    settings[$key]=$val
  }
  add_setting "cluster.name=$CLUSTER_NAME"
  add_setting "node.name=lumberd-es"
  add_setting "network.host=127.0.0.1"
  add_setting "discovery.type=single-node"
  add_setting "transport.port=0"
  add_setting "node.portsfile=true"
  add_setting "path.data=$dir/data"
  add_setting "path.logs=$dir/logs"
  # OpenSearch's integ-test zip has no security plugin and refuses unknown settings
  [[ $ENGINE == elasticsearch ]] && add_setting "xpack.security.enabled=false"
  add_setting "cluster.routing.allocation.disk.threshold_enabled=false"
  add_setting "action.destructive_requires_name=false"

  # extra settings: `start` uses exactly the given ones; `restart` without
  # any reuses those of the previous start (saved in DIR/es.args)
  local extras=()
  if [[ $# -gt 0 ]]; then
    mapfile -t extras < <(parse_settings "$@")
  elif [[ "$mode" == same && -s "$dir/es.args" ]]; then
    mapfile -t extras <"$dir/es.args"
  fi
  if [[ ${#extras[@]} -gt 0 ]]; then printf '%s\n' "${extras[@]}" >"$dir/es.args"; else : >"$dir/es.args"; fi

  local saved_port=""
  [[ -s "$dir/es.port" ]] && saved_port=$(<"$dir/es.port")
  if [[ -n "$saved_port" ]] && { [[ "$mode" == same ]] || ! port_in_use "$saved_port"; }; then
    add_setting "http.port=$saved_port"
  else
    [[ -n "$saved_port" ]] && log "port $saved_port (used before) is busy; picking another"
    add_setting "http.port=$(port_window)"
  fi
  for kv in "${extras[@]}"; do add_setting "$kv"; done

  # HTTPS when the node serves TLS (-E xpack.security.http.ssl.enabled=true); the health
  # probe then trusts $LUMBERD_ES_CACERT, or skips verification without it.
  local scheme=http
  [[ "${settings[xpack.security.http.ssl.enabled]:-false}" == true ]] && scheme=https
  printf '%s\n' "$scheme" >"$dir/es.scheme"

  {
    echo "# written by tests/es/es.sh; rewritten on every start"
    for k in "${order[@]}"; do printf '%s: %s\n' "$k" "$(yaml_quote "${settings[$k]}")"; done
  } >"$dir/config/$ENGINE.yml"
  printf '%s\n' "$ENGINE" >"$dir/es.engine"

  rm -f "$dir/logs/http.ports" "$dir/logs/transport.ports"

  # Elasticsearch refuses to run as root: as root, run it in a new user
  # namespace where it is "nobody" but keeps root's access to the files.
  local wrap=()
  if [[ $(id -u) -eq 0 ]]; then
    unshare --user true 2>/dev/null ||
      die "running as root and 'unshare --user' does not work; run as a non-root user"
    wrap=(unshare --user)
  fi

  local budget=$(( START_TIMEOUT - ($(now) - t0) ))
  [[ $budget -gt 5 ]] || budget=5
  local java_opts=${ES_JAVA_OPTS:-$DEFAULT_JAVA_OPTS}
  log "starting $RESOLVED_VERSION in $dir (java $java_home, ES_JAVA_OPTS=$java_opts)"
  # the two launchers read the same things under their own names
  local env_prefix=ES
  [[ $ENGINE == opensearch ]] && env_prefix=OPENSEARCH
  local rc=0
  # -d: the launcher returns once the node is up (or failed) and leaves the
  # server running; no inherited fds, so callers' pipes are not held open. From the
  # distribution's home: OpenSearch's launcher runs bin/opensearch-keystore relative
  # to the working directory (nothing is written there).
  (cd "$ES_HOME" && env "${env_prefix}_JAVA_HOME=$java_home" "${env_prefix}_PATH_CONF=$dir/config" \
    "${env_prefix}_TMPDIR=$dir/tmp" "${env_prefix}_JAVA_OPTS=$java_opts" \
    timeout -k 5 "$budget" "${wrap[@]}" "$ES_HOME/bin/$ENGINE" -d -p "$dir/es.pid" \
    </dev/null >"$dir/logs/console.log" 2>&1 8>&- 9>&-) || rc=$?
  if [[ $rc -ne 0 ]]; then
    if [[ $rc -eq 124 ]]; then
      log "Elasticsearch did not come up within ${budget}s"
    else
      log "Elasticsearch failed to start (launcher exit code $rc)"
    fi
    print_failure "$dir" console
    signal_node "$dir" KILL 5 || true
    exit 1
  fi

  # the launcher can exit 0 although the server died during boot, so the
  # node is judged by its process and the ports file it writes once HTTP is bound
  local port="" deadline=$(( t0 + START_TIMEOUT ))
  (( deadline > $(now) + 10 )) || deadline=$(( $(now) + 10 ))
  while :; do
    port=$(sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' "$dir/logs/http.ports" 2>/dev/null | head -1) || true
    [[ -n "$port" ]] && break
    if [[ -z "$(node_pids "$dir")" ]]; then
      log "Elasticsearch in $dir exited during startup"
      print_failure "$dir" console
      exit 1
    fi
    if [[ $(now) -ge $deadline ]]; then
      log "Elasticsearch in $dir wrote no logs/http.ports within ${START_TIMEOUT}s"
      print_failure "$dir"
      signal_node "$dir" KILL 5 || true
      exit 1
    fi
    sleep 0.2
  done
  printf '%s\n' "$port" >"$dir/es.port"
  local url="$scheme://127.0.0.1:$port"
  # the server waits up to 5s per request for yellow; the pause only matters
  # when the connection is refused outright
  local code auth=()
  [[ -n "${LUMBERD_ES_AUTH:-}" ]] && auth=(-u "$LUMBERD_ES_AUTH")
  local tls=()
  if [[ $scheme == https ]]; then
    if [[ -n "${LUMBERD_ES_CACERT:-}" ]]; then tls=(--cacert "$LUMBERD_ES_CACERT"); else tls=(-k); fi
  fi
  while :; do
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 6 "${auth[@]}" "${tls[@]}" \
      "$url/_cluster/health?wait_for_status=yellow&timeout=5s" 2>/dev/null) || true
    [[ "$code" == 200 ]] && break
    if [[ "$code" == 401 && ${#auth[@]} -eq 0 ]]; then
      # security was switched on with -E xpack.security.enabled=true: the node
      # answers, but yellow cannot be checked without LUMBERD_ES_AUTH=user:pass
      log "node answers 401 (security enabled); health not checked (set LUMBERD_ES_AUTH=user:pass)"
      break
    fi
    if [[ -z "$(node_pids "$dir")" ]]; then
      log "node in $dir died during startup"
      print_failure "$dir"
      exit 1
    fi
    if [[ $(now) -ge $deadline ]]; then
      log "cluster in $dir not yellow within ${START_TIMEOUT}s (last HTTP status ${code:-none})"
      print_failure "$dir"
      signal_node "$dir" KILL 5 || true
      exit 1
    fi
    sleep 0.2
  done
  log "node up after $(( $(now) - t0 ))s, pid $(<"$dir/es.pid")"
  printf '%s\n' "$url"
}

# -------------------------------------------------------------- cluster ---

# free_ports N: N ports nothing listens on, consecutive from a random place below the
# kernel's ephemeral range (as port_window), so a node restarted after `kill` gets
# its own ports back
free_ports() {
  local want=$1 lo=32768 p got=()
  [[ -r /proc/sys/net/ipv4/ip_local_port_range ]] && lo=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range)
  (( lo > 12000 )) || die "the ephemeral port range starts at $lo: no room below it for fixed ports"
  p=$(( 10000 + (RANDOM * 32768 + RANDOM) % (lo - 10000 - 4 * want - 100) ))
  while (( ${#got[@]} < want )); do
    (( p < lo )) || die "no $want free ports below $lo"
    port_in_use "$p" || got+=("$p")
    p=$((p + 1))
  done
  printf '%s\n' "${got[@]}"
}

# do_cluster ROOT N ARGS...: N master-eligible data nodes DIR/node-1..N, each on its
# own HTTP and transport port (fixed at first start, kept on restart), discovering
# each other through seed hosts; started at once (none is yellow before a quorum has
# joined); prints the HTTP URLs, comma-separated
do_cluster() {
  local root=$1 n=$2
  shift 2
  [[ "$n" =~ ^[1-9][0-9]?$ ]] || die "cluster wants a node count 1..99, got '$n'"
  [[ ! -s "$root/cluster.nodes" ]] || die "$root already holds a cluster; stop it and use restart per node"
  local t0 ports i names=() seeds=() pids=() failed=0 attempt
  t0=$(now)
  do_fetch
  for ((i = 1; i <= n; i++)); do names+=("node-$i"); done
  # The ports are free when chosen, but another process (a test node elsewhere picking
  # from its own window) may bind one before our node does: then the whole cluster
  # starts again, fresh, on other ports (at most 3 times).
  for attempt in 1 2 3; do
    mapfile -t ports < <(free_ports $((2 * n)))
    seeds=() pids=() failed=0
    for ((i = 1; i <= n; i++)); do seeds+=("127.0.0.1:${ports[n + i - 1]}"); done
    local IFS_=$IFS
    IFS=,
    local seed_list="${seeds[*]}" master_list="${names[*]}"
    IFS=$IFS_
    for ((i = 1; i <= n; i++)); do
      mkdir -p "$root/node-$i"
      bash "$0" start "$root/node-$i" -E "node.name=node-$i" -E discovery.type=multi-node \
        -E "http.port=${ports[i - 1]}" -E "transport.port=${ports[n + i - 1]}" \
        -E "discovery.seed_hosts=$seed_list" -E "cluster.initial_master_nodes=$master_list" "$@" \
        >"$root/node-$i.url" 2>"$root/node-$i.start.log" 8>&- 9>&- &
      pids+=($!)
    done
    printf '%s\n' "${names[@]}" >"$root/cluster.nodes"
    for ((i = 1; i <= n; i++)); do
      wait "${pids[i - 1]}" || failed=$i
    done
    [[ $failed -eq 0 ]] && break
    stop_cluster "$root" || true
    if [[ $attempt -lt 3 ]] && grep -qs 'BindException' "$root"/node-*/logs/console.log; then
      log "a port of the cluster in $root was taken meanwhile; starting it again on other ports"
      for ((i = 1; i <= n; i++)); do rm -rf "${root:?}/node-$i"; done
      continue
    fi
    for ((i = 1; i <= n; i++)); do
      log "node-$i of the cluster in $root:"
      cat "$root/node-$i.start.log" >&2
    done
    exit 1
  done
  local urls=() url
  for ((i = 1; i <= n; i++)); do urls+=("$(tail -n1 "$root/node-$i.url")"); done
  url=${urls[0]}
  local code
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 70 \
    "$url/_cluster/health?wait_for_nodes=$n&wait_for_status=yellow&timeout=60s" 2>/dev/null) || true
  if [[ "$code" != 200 ]]; then
    log "the $n nodes in $root did not form one cluster within 60s (health: HTTP ${code:-none})"
    print_failure "$root/node-1"
    stop_cluster "$root"
    exit 1
  fi
  IFS=,
  log "cluster of $n up after $(( $(now) - t0 ))s: ${urls[*]}"
  printf '%s\n' "${urls[*]}"
  IFS=$IFS_
}

# stop_cluster ROOT: SIGTERM to every node at once, then wait for each
stop_cluster() {
  local root=$1 name pids=()
  while read -r name; do
    [[ -d "$root/$name" ]] || continue
    bash "$0" stop "$root/$name" 8>&- 9>&- &
    pids+=($!)
  done <"$root/cluster.nodes"
  local p rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

# ---------------------------------------------------------------- main ---

with_dir_lock() { # DIR -- lock DIR against concurrent start/stop
  exec 9>"$1/.es.lock"
  flock 9
}

cmd=${1:-}
[[ -n "$cmd" ]] || usage
shift

case "$cmd" in
  fetch)
    do_fetch
    printf '%s\n' "$ES_HOME"
    ;;
  start)
    [[ $# -ge 1 ]] || usage
    dir=$(abs_dir "$1"); shift
    with_dir_lock "$dir"
    do_start "$dir" auto "$@"
    ;;
  cluster)
    [[ $# -ge 2 ]] || usage
    dir=$(abs_dir "$1"); n=$2; shift 2
    with_dir_lock "$dir"
    do_cluster "$dir" "$n" "$@"
    ;;
  restart)
    [[ $# -ge 1 ]] || usage
    dir=$(abs_dir "$1"); shift
    # a node started by another engine restarts as that engine
    [[ -z "${LUMBERD_ES_ENGINE:-}" && -s "$dir/es.engine" ]] && set_engine "$(<"$dir/es.engine")"
    with_dir_lock "$dir"
    signal_node "$dir" TERM "$STOP_TIMEOUT"
    do_start "$dir" same "$@"
    ;;
  stop)
    [[ $# -eq 1 ]] || usage
    dir=$(abs_dir "$1")
    if [[ -s "$dir/cluster.nodes" ]]; then
      stop_cluster "$dir"
    else
      with_dir_lock "$dir"
      signal_node "$dir" TERM "$STOP_TIMEOUT"
    fi
    ;;
  kill)
    [[ $# -eq 1 ]] || usage
    dir=$(abs_dir "$1")
    signal_node "$dir" KILL 10
    ;;
  watch)
    # A guard for a test process that holds nodes for its lifetime (a cluster shared
    # by its tests is never dropped): once PID is gone, DIR is stopped, and with
    # --remove deleted (its temp dir is never dropped either). Detached, with no
    # inherited pipes, so the caller does not wait for it.
    [[ ( $# -eq 2 || ( $# -eq 3 && "$3" == --remove ) ) && "$1" =~ ^[0-9]+$ ]] || usage
    pid=$1 dir=$(abs_dir "$2") remove=${3:-}
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done
      bash "$2" stop "$3"; [[ "$4" != --remove ]] || rm -rf -- "$3"' \
      es-watch "$pid" "$0" "$dir" "$remove" </dev/null >/dev/null 2>&1 8>&- 9>&- &
    ;;
  adduser)
    # file-realm user for nodes started with -E xpack.security.enabled=true;
    # works before start and on a running node (picked up within ~5s)
    [[ $# -ge 3 && $# -le 4 ]] || usage
    dir=$(abs_dir "$1")
    do_fetch
    mkdir -p "$dir/logs"
    ensure_config "$dir"
    ES_JAVA_HOME="$(find_java)" ES_PATH_CONF="$dir/config" \
      "$ES_HOME/bin/elasticsearch-users" useradd "$2" -p "$3" -r "${4:-superuser}" >&2
    ;;
  url)
    [[ $# -eq 1 ]] || usage
    [[ -d "$1" ]] || die "no such directory: $1"
    dir=$(abs_dir "$1")
    node_url "$dir" || die "no node running in $dir"
    ;;
  stop-all)
    # every node whose server runs from a distribution in this cache
    found=0
    for p in /proc/[0-9]*; do
      p=${p#/proc/}
      mapfile -t argv < <(tr '\0' '\n' 2>/dev/null <"/proc/$p/cmdline" || true)
      ours=0 d=""
      for a in "${argv[@]}"; do
        # ES: --module-path HOME/lib; OpenSearch: -cp HOME/lib/*
        [[ "$a" == "$CACHE_DIR"/*/lib || "$a" == "$CACHE_DIR"/*/lib/\* ]] && ours=1
        [[ "$a" == -Djava.io.tmpdir=*/tmp ]] && { d=${a#-Djava.io.tmpdir=}; d=${d%/tmp}; }
      done
      [[ $ours -eq 1 && ( " ${argv[*]} " == *" ${MAIN_CLASS[elasticsearch]} "* ||
        " ${argv[*]} " == *" ${MAIN_CLASS[opensearch]} "* ) ]] || continue
      log "stopping pid $p (${d:-?})"
      found=1
      kill -TERM "$p" 2>/dev/null || true
      wait_gone "$STOP_TIMEOUT" "$p" || { kill -KILL "$p" 2>/dev/null || true; wait_gone 30 "$p" || true; }
      [[ -n "$d" ]] && rm -f "$d/es.pid"
    done
    [[ $found -eq 1 ]] || log "no running nodes from $CACHE_DIR"
    ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
