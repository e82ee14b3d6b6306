#!/usr/bin/env bash
# Re-records proto-fixtures/valid/ from the real clients (run tests/clients/setup.sh
# first; `make fixtures` does). Each recording: target/clients/recorder listens on a
# loopback port, the client connects and sends, the recorder proxies to an in-process
# go-lumber server that acks, then writes <name>.bin and <name>.expect.json after
# cross-checking the events against the client's own dump. See proto-fixtures/README.md.
# With an argument, only the recordings whose name starts with it are made again
# (e.g. `record-fixtures.sh filebeat`).
set -euo pipefail
ONLY=${1:-}
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=$ROOT/proto-fixtures/valid
C=$ROOT/target/clients
for f in "$C/lumberclient" "$C/recorder" "$C/filebeat" "$C/venv/bin/python" tests/clients/node/node_modules/lumberjack-client/package.json; do
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
  [[ -z $ONLY || $name == "$ONLY"* ]] || return 0
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

# Elastic's Filebeat itself: the user's filebeat.yml (tests/clients/filebeat/filebeat.user.yml) with only the
# path and host changed, tailing 10 Qwen lines; bulk_max_size 4 (a -E flag) so the stream
# has several windows, with Filebeat's defaults otherwise (pipelining 2, compression 3).
# Filebeat keeps its connection until it stops: it is stopped (SIGTERM) once its registry
# has the whole file acknowledged, which ends the recording. Filebeat dumps nothing, so
# the third view is the log file: each event's message, log.offset and log.file.path
# must be its line's.
record_filebeat() {
  local name=$1 dir=$WORK/filebeat
  [[ -z $ONLY || $name == "$ONLY"* ]] || return 0
  local log=$dir/qwen_inference.log addrf=$WORK/$name.addr
  mkdir -p "$dir/home/module" "$dir/data"
  python3 - "$log" <<'PY'
import json, sys
prompts = ["你好，请介绍一下你自己", "quote \" backslash \\ tab \t", "<b>html</b> & emoji 🚀", ""]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for i in range(10):
        f.write(json.dumps({
            "timestamp": "2025-04-05T23:59:5%dZ" % i if i < 8 else "2025-04-06T00:00:0%d.250+00:00" % i,
            "level": "ERROR" if i % 4 == 3 else "INFO",
            "request_id": "req_fx_fb_%02d" % i,
            "prompt": prompts[i % len(prompts)],
            "response_length": [156, "42", 7.5][i % 3],
            "inference_time_ms": 892 + i,
            "status": "error" if i % 4 == 3 else "success",
        }, ensure_ascii=False, separators=(",", ":")) + "\n")
PY
  "$C/recorder" -out "$OUT/$name" -client "Filebeat $FILEBEAT (github.com/elastic/beats/v7, go-lumber v0.1.0 client/v2)" \
    -settings '{"input":"filestream (the user config: no id, close_eof)","bulk_max_size":4,"pipelining":"2 (default)","compression_level":"3 (default)","lines":10}' \
    -ack go-lumber -wait 120s >"$addrf" 2>"$WORK/$name.recorder.log" &
  local rec=$! addr=""
  for _ in $(seq 100); do
    addr=$(sed -n 's/^listening //p' "$addrf")
    [[ -n $addr ]] && break
    sleep 0.1
  done
  [[ -n $addr ]] || { cat "$WORK/$name.recorder.log" >&2; kill "$rec"; echo "record-fixtures: $name: recorder did not start" >&2; exit 1; }
  sed -e "s#- /logs/qwen_inference.log#- $log#" -e "s#\"logstash:5044\"#\"$addr\"#" \
    tests/clients/filebeat/filebeat.user.yml >"$dir/filebeat.yml"
  "$C/filebeat" -e -c "$dir/filebeat.yml" --path.home "$dir/home" --path.config "$dir" \
    --path.data "$dir/data" --path.logs "$dir/logs" -E output.logstash.bulk_max_size=4 \
    >"$WORK/$name.filebeat.log" 2>&1 &
  local fb=$!
  # the registry's cursor for the file (keyed by inode-device) reaching the file's size
  local shipped=0
  for _ in $(seq 600); do
    if python3 - "$dir/data/registry/filebeat/log.json" "$log" <<'PY'
import json, os, sys
st = os.stat(sys.argv[2]); key = "::native::%d-%d" % (st.st_ino, st.st_dev); off = None
try:
    for line in open(sys.argv[1]):
        try: v = json.loads(line)
        except ValueError: break
        if v.get("k", "").endswith(key): off = ((v.get("v") or {}).get("cursor") or {}).get("offset")
except FileNotFoundError: pass
sys.exit(0 if off == st.st_size else 1)
PY
    then shipped=1; break; fi
    sleep 0.1
  done
  kill -TERM "$fb"; wait "$fb" || true
  if [[ $shipped -ne 1 ]]; then
    tail -30 "$WORK/$name.filebeat.log" >&2; kill "$rec" 2>/dev/null || true
    echo "record-fixtures: $name: Filebeat did not ship the file within 60 s" >&2; exit 1
  fi
  if ! wait "$rec"; then
    cat "$WORK/$name.recorder.log" >&2; echo "record-fixtures: $name: recorder failed" >&2; exit 1
  fi
  grep '^recorder:' "$WORK/$name.recorder.log" || true
  python3 - "$OUT/$name.expect.json" "$log" <<'PY' || { echo "record-fixtures: $name: events do not match the log file" >&2; exit 1; }
import json, sys
events = json.load(open(sys.argv[1], encoding="utf-8"))["events"]
raw = open(sys.argv[2], "rb").read()
offset, want = 0, []
for line in raw.split(b"\n")[:-1]:
    want.append((line.decode("utf-8"), offset)); offset += len(line) + 1
got = [(e["message"], e["log"]["offset"]) for e in events]
assert got == want, "events (message, log.offset) %r\nlines %r" % (got, want)
assert all(e["log"]["file"]["path"] == sys.argv[2] for e in events)
assert all(e["input"]["type"] == "filestream" for e in events)
PY
}
FILEBEAT=$("$C/filebeat" version | awk '{print $3}')
record_filebeat "filebeat-$FILEBEAT-filestream-c3-b4"

echo "record-fixtures: proto-fixtures/valid holds $(ls "$OUT"/*.bin | wc -l) recordings"
