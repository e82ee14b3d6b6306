#!/usr/bin/env bash
# Re-checks the feature findings recorded in tests/es/README.md against a real
# node: starts two throwaway nodes with es.sh, curls them, prints the raw
# answers, stops the nodes. Usage: tests/es/probe.sh [WORKDIR]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
es="$here/es.sh"
work=${1:-$(mktemp -d "${TMPDIR:-/tmp}/lumberd-es-probe.XXXXXX")}
a="$work/node-a" q="$work/node-q"

cleanup() { "$es" stop "$a" || true; "$es" stop "$q" || true; }
trap cleanup EXIT

show() { # METHOD PATH [BODY] [CONTENT-TYPE]
  local m=$1 p=$2 body=${3:-} ct=${4:-application/json}
  echo "\$ $m $p"
  if [[ -n "$body" ]]; then
    curl -sS -X "$m" "$url$p" -H "content-type: $ct" --data-binary "$body" -w '\n=> HTTP %{http_code}\n'
  else
    curl -sS -X "$m" "$url$p" -w '\n=> HTTP %{http_code}\n'
  fi
}

t0=$(date +%s)
url=$("$es" start "$a" | tail -n1)
echo "# node up at $url after $(( $(date +%s) - t0 ))s"

echo "## distribution"
show GET '/_nodes/plugins?filter_path=nodes.*.version,nodes.*.modules.name,nodes.*.plugins.name'
show GET /_license?filter_path=license.type,license.status
show GET /
show GET '/_cluster/settings?include_defaults=true&flat_settings=true&filter_path=defaults.xpack.security.enabled'

echo "## composable index template"
show PUT /_index_template/qwen-logs \
  '{"index_patterns":["qwen-logs-*"],"template":{"mappings":{"properties":{"response_length":{"type":"integer"}}}}}'
show PUT /_component_template/qwen-settings '{"template":{"settings":{"number_of_replicas":0}}}'
show PUT /_template/legacy '{"index_patterns":["legacy-*"],"mappings":{"properties":{"a":{"type":"integer"}}}}'

echo "## _bulk create with explicit _id: new, new, duplicate, mapping conflict"
show POST /_bulk "$(printf '%s\n' \
  '{"create":{"_index":"qwen-logs-2024.01.01","_id":"a1"}}' '{"message":"one","response_length":10}' \
  '{"create":{"_index":"qwen-logs-2024.01.01","_id":"a2"}}' '{"message":"two","response_length":20}' \
  '{"create":{"_index":"qwen-logs-2024.01.01","_id":"a1"}}' '{"message":"dup","response_length":30}' \
  '{"create":{"_index":"qwen-logs-2024.01.01","_id":"a3"}}' '{"message":"bad","response_length":"abc"}')
" application/x-ndjson
show GET /qwen-logs-2024.01.01/_mapping
show GET '/_cluster/health/qwen-logs-2024.01.01?filter_path=status'

echo "## x-pack features that are not in the integ-test-zip"
show PUT /_ilm/policy/x '{"policy":{"phases":{"hot":{"actions":{"rollover":{"max_size":"1gb"}}}}}}'
show GET /_ilm/policy/x
show PUT /_data_stream/logs-x
show PUT /_ingest/pipeline/p1 '{"processors":[{"set":{"field":"x","value":"y"}}]}'
show PUT /_ingest/pipeline/p0 '{"processors":[]}'

echo "## write queue of 1: concurrent bulks"
url=$("$es" start "$q" -E thread_pool.write.queue_size=1 | tail -n1)
show PUT /_index_template/load '{"index_patterns":["load-*"],"template":{"settings":{"number_of_shards":2,"number_of_replicas":0}}}'
body="$work/load.ndjson"
for i in $(seq 0 2999); do
  printf '{"index":{"_index":"load-%d"}}\n{"message":"line %d %0200d","response_length":%d}\n' $((i % 4)) "$i" 0 "$i"
done >"$body"
mkdir -p "$work/out"
for i in $(seq 1 8); do
  curl -sS -o "$work/out/$i.json" -w '%{http_code}\n' -X POST "$url/_bulk" \
    -H 'content-type: application/x-ndjson' --data-binary @"$body" &
done | sort | uniq -c | sed 's/^/HTTP status count: /'
wait
for f in "$work"/out/*.json; do
  # one line per response: top-level error type, or item statuses counted
  tr ',' '\n' <"$f" | grep -o '"status":[0-9]*\|"type":"[a-z_]*"' | sort | uniq -c | tr '\n' ' '
  echo
done
show GET '/_cat/thread_pool/write?v&h=name,size,queue_size,rejected,completed'
