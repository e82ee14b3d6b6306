#!/usr/bin/env bash
# Records real Elasticsearch answers to _bulk requests, for the settlement's unit tests
# (src/output/elasticsearch/settle.rs reads them; the README beside them says which
# request each answers). Each file: the HTTP status on the first line, then the body.
#
#   tests/es/record-answers.sh [OUT_DIR]   default: src/output/elasticsearch/answers
#
# Two throwaway nodes (security on, so that 401 and 403 are real):
#   a: http.max_content_length=64kb (413), a write pool of one thread and a queue of one
#      (429 on items and on whole requests);
#   b: expects two data nodes and waits 30 minutes for the second, so its cluster state
#      stays unrecovered: what a restarting cluster answers (503).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
es="$here/es.sh"
out=$(mkdir -p "${1:-$here/../../src/output/elasticsearch/answers}" && cd "${1:-$here/../../src/output/elasticsearch/answers}" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/lumberd-es-answers.XXXXXX")
a="$work/node-a" b="$work/node-b"
user=lumberd pass=s3cret-pass reader=reader reader_pass=r3ader-pass

cleanup() { "$es" stop "$a" || true; "$es" stop "$b" || true; rm -rf "$work"; }
trap cleanup EXIT

log() { printf 'record-answers: %s\n' "$*" >&2; }

# record NAME CREDENTIALS PATH BODY_FILE: POST BODY_FILE to PATH, write NAME.
record() {
  local name=$1 cred=$2 path=$3 body=$4 status
  status=$(curl -sS -u "$cred" -H 'content-type: application/x-ndjson' \
    --data-binary "@$body" -o "$work/body" -w '%{http_code}' "$url$path")
  { printf '%s\n' "$status"; cat "$work/body"; } >"$out/$name"
  log "$name: HTTP $status, $(wc -c <"$work/body") bytes"
}

# bulk FILE INDEX ID:DOC...: a _bulk body of `create` actions.
bulk() {
  local file=$1 index=$2 pair
  shift 2
  : >"$file"
  for pair in "$@"; do
    printf '{"create":{"_index":"%s","_id":"%s"}}\n%s\n' "$index" "${pair%%:*}" "${pair#*:}" >>"$file"
  done
}

mkdir -p "$a" "$b"
"$es" adduser "$a" "$user" "$pass" >/dev/null
"$es" adduser "$a" "$reader" "$reader_pass" viewer >/dev/null
url=$("$es" start "$a" -E xpack.security.enabled=true -E http.max_content_length=64kb \
  -E thread_pool.write.queue_size=1 -E thread_pool.write.size=1 | tail -n1)

bulk "$work/two" rec-a 'id1:{"response_length":1}' 'id2:{"response_length":2}'
record 200-created.json "$user:$pass" /_bulk "$work/two"
# id1 again (a resent window), a value its mapping refuses, and a new one.
bulk "$work/mixed" rec-a 'id1:{"response_length":1}' 'id3:{"response_length":"abc"}' \
  'id4:{"response_length":4}'
record 200-duplicate-rejected-created.json "$user:$pass" /_bulk "$work/mixed"
record 401-bad-password.json "$user:wrong-$pass" /_bulk "$work/two"
record 403-read-only-user.json "$reader:$reader_pass" /_bulk "$work/two"
printf '{"nonsense":{"_index":"rec-a"}}\n{"response_length":1}\n' >"$work/malformed"
record 400-malformed-action.json "$user:$pass" /_bulk "$work/malformed"
python3 - "$work/big" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(40):  # 80 KiB > http.max_content_length
        f.write(json.dumps({"create": {"_index": "rec-a", "_id": f"big{i}"}}) + "\n")
        f.write(json.dumps({"prompt": "x" * 2000}) + "\n")
EOF
record 413-too-large.txt "$user:$pass" /_bulk "$work/big"

# One replica wanted, one node: after the timeout every item answers 503.
curl -sS -u "$user:$pass" -X PUT -H 'content-type: application/json' "$url/rec-r" \
  -d '{"settings":{"number_of_replicas":1}}' >/dev/null
bulk "$work/replica" rec-r 'u1:{"response_length":1}' 'u2:{"response_length":2}'
record 200-unavailable-shards.json "$user:$pass" '/_bulk?wait_for_active_shards=2&timeout=1s' \
  "$work/replica"

# 429: requests at once against a write queue of one, until one answer has both a
# rejected and a created item and another is refused as a whole.
curl -sS -u "$user:$pass" -X PUT -H 'content-type: application/json' "$url/rec-q" \
  -d '{"settings":{"number_of_shards":4,"number_of_replicas":0}}' >/dev/null
found_items="" found_whole=""
for round in 1 2 3 4 5 6 7 8; do
  for k in $(seq 0 15); do
    bulk "$work/q$k" rec-q "r$round-$k-0:{\"response_length\":0}" "r$round-$k-1:{\"response_length\":1}" \
      "r$round-$k-2:{\"response_length\":2}" "r$round-$k-3:{\"response_length\":3}"
    curl -sS -u "$user:$pass" -H 'content-type: application/x-ndjson' --data-binary "@$work/q$k" \
      -o "$work/q$k.out" -w '%{http_code}' "$url/_bulk" >"$work/q$k.status" &
  done
  wait
  for k in $(seq 0 15); do
    status=$(<"$work/q$k.status")
    if [[ -z "$found_items" && $status == 200 ]] && python3 - "$work/q$k.out" <<'EOF'
import json, sys
s = [i["create"]["status"] for i in json.load(open(sys.argv[1]))["items"]]
sys.exit(0 if 429 in s and 201 in s else 1)
EOF
    then
      { echo 200; cat "$work/q$k.out"; } >"$out/200-write-queue-full.json"
      found_items=1
      log "200-write-queue-full.json: round $round"
    fi
    if [[ -z "$found_whole" && $status == 429 ]]; then
      { echo 429; cat "$work/q$k.out"; } >"$out/429-write-queue-full.json"
      found_whole=1
      log "429-write-queue-full.json: round $round"
    fi
  done
  [[ -n "$found_items" && -n "$found_whole" ]] && break
done
[[ -n "$found_items" && -n "$found_whole" ]] || { log "no 429 answers in 8 rounds"; exit 1; }
"$es" stop "$a"

"$es" adduser "$b" "$user" "$pass" >/dev/null
url=$("$es" start "$b" -E xpack.security.enabled=true -E gateway.expected_data_nodes=2 \
  -E gateway.recover_after_time=30m | tail -n1)
record 503-state-not-recovered.json "$user:$pass" /_bulk "$work/two"
log "answers in $out"
