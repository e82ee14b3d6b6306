#!/usr/bin/env bash
# Re-records proto-fixtures/valid/ from the real clients (run tests/clients/setup.sh
# first; `make fixtures` does). Each recording: target/clients/recorder listens on a
# loopback port, the client connects and sends, the recorder proxies to an in-process
# go-lumber server that acks, then writes <name>.bin and <name>.expect.json after
# cross-checking the events against the client's own dump. See proto-fixtures/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=$ROOT/proto-fixtures/valid
C=$ROOT/target/clients
for f in "$C/lumberclient" "$C/recorder" "$C/venv/bin/python" tests/clients/node/node_modules/lumberjack-client/package.json; do
  [[ -e $f ]] || { echo "record-fixtures: $f missing: run tests/clients/setup.sh" >&2; exit 1; }
done
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
GOLUMBER=$(sed -n 's/^require github.com\/elastic\/go-lumber \(.*\)$/\1/p' tests/clients/go/go.mod)
PYLOGBEAT=$(sed -n 's/^pylogbeat==//p' tests/clients/python/requirements.txt)
LJC=$(node -p "require('./tests/clients/node/node_modules/lumberjack-client/package.json').version")
LJP=$(node -p "require('./tests/clients/node/node_modules/lumberjack-protocol/package.json').version")

# record NAME CLIENT_DESC SETTINGS_JSON ACKMODE -- CLIENT COMMAND... (gets -addr and -dump appended)
record() {
  local name=$1 desc=$2 settings=$3 ack=$4; shift 5
  local log=$WORK/$name.recorder.log addrf=$WORK/$name.addr
  "$C/recorder" -out "$OUT/$name" -client "$desc" -settings "$settings" -ack "$ack" \
    -dump "$WORK/$name.dump.jsonl" -wait 60s >"$addrf" 2>"$log" &
  local pid=$!
  local addr=""
  for _ in $(seq 100); do
    addr=$(sed -n 's/^listening //p' "$addrf")
    [[ -n $addr ]] && break
    sleep 0.1
  done
  [[ -n $addr ]] || { cat "$log" >&2; kill "$pid" 2>/dev/null; echo "record-fixtures: $name: recorder did not start" >&2; exit 1; }
  if ! "$@" -addr "$addr" -dump "$WORK/$name.dump.jsonl" >"$WORK/$name.client.json" 2>"$WORK/$name.client.err"; then
    cat "$WORK/$name.client.json" "$WORK/$name.client.err" >&2
    kill "$pid" 2>/dev/null || true
    echo "record-fixtures: $name: client failed" >&2; exit 1
  fi
  if ! wait "$pid"; then
    cat "$log" >&2
    echo "record-fixtures: $name: recorder failed" >&2; exit 1
  fi
  grep '^recorder:' "$log" || true
}

record go-lumber-sync-c0-w3x2 "go-lumber $GOLUMBER sync" \
  '{"mode":"sync","compression_level":0,"window":3,"windows":2}' go-lumber -- \
  "$C/lumberclient" -mode sync -compress 0 -window 3 -windows 2 -id fx-s0
record go-lumber-sync-c3-w5x2 "go-lumber $GOLUMBER sync" \
  '{"mode":"sync","compression_level":3,"window":5,"windows":2}' go-lumber -- \
  "$C/lumberclient" -mode sync -compress 3 -window 5 -windows 2 -id fx-s3
record go-lumber-async-c9-w4x3 "go-lumber $GOLUMBER async (AsyncClient, 2 in flight)" \
  '{"mode":"async","inflight":2,"compression_level":9,"window":4,"windows":3}' go-lumber -- \
  "$C/lumberclient" -mode async -inflight 2 -compress 9 -window 4 -windows 3 -id fx-a9
record go-lumber-sync-c3-w2048 "go-lumber $GOLUMBER sync" \
  '{"mode":"sync","compression_level":3,"window":2048,"windows":1}' go-lumber -- \
  "$C/lumberclient" -mode sync -compress 3 -window 2048 -windows 1 -id fx-big
# pylogbeat keeps one running sequence across windows and waits for an ACK equal to
# the last one: go-lumber's server acks N instead, so the recorder rewrites its ACKs.
record pylogbeat-w3x3 "pylogbeat $PYLOGBEAT" \
  '{"window":3,"windows":3,"connection":"one","sequence":"running across windows","compression":"zlib.compress default (level 6)"}' last-seq -- \
  "$C/venv/bin/python" tests/clients/python/pylogbeat_client.py -window 3 -windows 3 -id fx-py
record lumberjack-client-w5-singles2 "lumberjack-client $LJC (npm)" \
  '{"first_window":5,"single_event_windows":2,"compression":"pako.deflate default (level 6)","pipelined":true}' go-lumber -- \
  node tests/clients/node/lumberjack_client.js -window 5 -singles 2 -id fx-ljc
record lumberjack-protocol-v1-w5 "lumberjack-protocol $LJP (npm), v1" \
  '{"protocol":1,"window":5,"windows":1,"compression":"none"}' go-lumber -- \
  node tests/clients/node/v1_client.js -window 5 -windows 1 -id fx-v1

echo "record-fixtures: wrote $(ls "$OUT"/*.bin | wc -l) recordings to proto-fixtures/valid"
