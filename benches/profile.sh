#!/usr/bin/env bash
# Profiles a live lumberd under the e2e load (benches/README.md, "Profiling"):
#   benches/profile.sh default|empty|floor OUT_DIR [EVENTS] [LUMBERD]
# Starts lumberd (or the floor) on a free port with a fresh data dir, attaches
# `perf record --call-graph dwarf` for the whole lumberload run, then writes
# OUT_DIR/<scenario>.perf.data and the self/inclusive tops as text.
set -euo pipefail
scenario=${1:?default|empty|floor}
out=${2:?output dir}
events=${3:-1000000}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${4:-$repo/target/release/lumberd}
load=$repo/target/bench/lumberload
[ -x "$load" ] || (cd "$repo/benches/load" && go build -o "$load" .)
mkdir -p "$out"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export LUMBERD_SERVER_LISTEN=127.0.0.1:$port LUMBERD_OUTPUT_DATA_DIR=$work/data \
  LUMBERD_LOG_FORMAT=text LUMBERD_ADMIN_LISTEN=127.0.0.1:0
case $scenario in
  default) ;;
  empty) printf '[pipeline]\nfilter = []\nfingerprint = []\nmetric = []\n' >"$work/empty.toml"
         export LUMBERD_CONFIG=$work/empty.toml ;;
  floor) bin=$repo/target/release/examples/floor ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
if [ "$scenario" = floor ]; then "$bin" >"$work/log" 2>&1 & else "$bin" serve >"$work/log" 2>&1 & fi
pid=$!
until python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; do
  kill -0 "$pid" || { cat "$work/log"; exit 1; }
  sleep 0.1
done
perf record -F 999 --call-graph dwarf,16384 -p "$pid" -o "$out/$scenario.perf.data" 2>"$work/perf.log" &
perf_pid=$!
sleep 1
"$load" -addr "127.0.0.1:$port" -conns 4 -events "$events" -window 2048 -compress 3 -pipelining 2
kill -INT "$perf_pid"
wait "$perf_pid" || true
perf report -i "$out/$scenario.perf.data" --no-children --sort symbol --stdio -g none \
  --percent-limit 0.7 2>/dev/null | grep -v '^$' | head -60 >"$out/$scenario.self.txt"
perf report -i "$out/$scenario.perf.data" --children --sort symbol --stdio -g none \
  --percent-limit 2 2>/dev/null | grep -v '^$' | head -80 >"$out/$scenario.children.txt"
echo "wrote $out/$scenario.{self,children}.txt"
