#!/usr/bin/env bash
# Imports kibana/qwen-logs.ndjson into a Kibana 8.11 (`make kibana-import KIBANA=...`):
# POST /api/saved_objects/_import?overwrite=true, then fails unless Kibana answers
# "success": true (it answers 200 with per-object errors otherwise).
#
#   kibana/import.sh http://localhost:5601          # KIBANA_AUTH=user:password with security
set -euo pipefail
KIBANA=${1:?usage: kibana/import.sh KIBANA_URL}
FILE=$(dirname "$0")/qwen-logs.ndjson
auth=()
[[ -n ${KIBANA_AUTH:-} ]] && auth=(-u "$KIBANA_AUTH")
answer=$(curl -sS --fail-with-body "${auth[@]}" -X POST "${KIBANA%/}/api/saved_objects/_import?overwrite=true" \
  -H "kbn-xsrf: true" --form "file=@$FILE") || { echo "kibana-import: $answer" >&2; exit 1; }
echo "$answer"
if ! grep -q '"success":true' <<<"$answer"; then
  echo "kibana-import: Kibana did not import every object (see errors above)" >&2
  exit 1
fi
echo "kibana-import: imported $(grep -c . "$FILE") objects; open ${KIBANA%/}/app/dashboards#/view/qwen-inference"
