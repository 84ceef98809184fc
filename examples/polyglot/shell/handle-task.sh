#!/usr/bin/env bash
# The seed's SampleExternalTask worker as a `nats reply --command` hook.
#
# nats reply runs this once per task event with the task payload (JSON) in
# NATS_REQUEST_BODY (stdin when unset, for testing) and sends everything this
# script prints as the reply body, stdout and stderr alike: print nothing but
# the reply. The CLI cannot set headers, so outcomes other than success use
# the body envelope of the wire contract ("$pe"):
#   success         any JSON, here {"some":"result","echo":<payload>}
#   BPMN error      {"$pe":"bpmn_error","code":"...","message":"...","details":{...}}
#   technical error {"$pe":"failure","message":"...","retryAfterMs":5000}
# Pure bash: no jq needed.
set -uo pipefail

if [[ -n "${NATS_REQUEST_BODY+set}" ]]; then
  payload=$NATS_REQUEST_BODY
else
  payload=$(cat)
fi
# Trim whitespace; an empty payload is JSON null.
payload="${payload#"${payload%%[![:space:]]*}"}"
payload="${payload%"${payload##*[![:space:]]}"}"
[[ -z "$payload" ]] && payload=null

case "$payload" in
  \{*|\[*|\"*|null|true|false|-*|[0-9]*) ;;
  *)
    printf '{"$pe":"failure","message":"shell worker: payload is not JSON","retryAfterMs":1000}'
    exit 0
    ;;
esac

if [[ "$payload" =~ \"amount\"[[:space:]]*:[[:space:]]*-[0-9] ]]; then
  printf '{"$pe":"bpmn_error","code":"invalid_amount","message":"amount must not be negative"}'
  exit 0
fi

printf '{"some":"result","echo":%s}' "$payload"
