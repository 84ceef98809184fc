#!/usr/bin/env bash
# The seed's SampleExternalTask worker as a `nats reply --command` hook.
#
# nats reply (CLI v0.5.0) runs this once per task event, one at a time, with
# the message body in NATS_REQUEST_BODY (stdin is empty; when
# NATS_REQUEST_BODY is unset this script reads stdin, for trying it by hand).
# It sends everything the script prints, stdout and stderr alike, as the
# reply, even when the script exits non-zero: print nothing but the reply.
# The CLI cannot set per-message headers, so outcomes other than success use
# the body envelope of the wire contract ("$pe", docs/contract.md §4):
#   success         any JSON, here {"some":"result","echo":<payload>}
#   BPMN error      {"$pe":"bpmn_error","code":"...","message":"...","details":{...}}
#   technical error {"$pe":"failure","message":"...","retryAfterMs":5000}
#
# The body is the task payload (binary content mode, the default) or, when
# the bridge runs with --structured-topics SampleExternalTask, the whole
# CloudEvent: then the script sees ce-id and the task attributes and
# de-duplicates. The bridge delivers at least once and every delivery of a
# task carries the same id; a task whose outcome was settled before (success
# or BPMN error) gets the stored reply again instead of being worked twice.
# Technical failures are not stored: the retry does the work again.
# STATE_DIR (default $TMPDIR/pe-shell-worker) holds one file per settled task
# and the log handled.log; share it between replicas on one host. Needs jq.
set -uo pipefail
command -v jq >/dev/null || { printf '{"$pe":"failure","message":"shell worker: jq is not installed"}'; exit 0; }

body=${NATS_REQUEST_BODY-$(cat)}
state=${STATE_DIR:-${TMPDIR:-/tmp}/pe-shell-worker}
mkdir -p "$state"

fail() { jq -nc --arg m "$1" '{"$pe":"failure",message:$m,retryAfterMs:1000}'; exit 0; }

# A structured task event: {"specversion":"1.0","type":"io.pebridge.task.v1","id":...,"data":<payload>}.
id="" payload=$body
if jq -e 'type == "object" and .specversion == "1.0" and .type == "io.pebridge.task.v1"' <<<"$body" >/dev/null 2>&1; then
  id=$(jq -r '.id' <<<"$body")
  payload=$(jq -c '.data // null' <<<"$body")
  file="$state/$(printf %s "$id" | tr -c 'A-Za-z0-9._-' _).reply"
  if [[ -f "$file" ]]; then
    echo "task $id: delivered again, stored reply sent" >>"$state/handled.log"
    cat "$file"
    exit 0
  fi
fi
[[ -z "${payload//[[:space:]]/}" ]] && payload=null
jq . <<<"$payload" >/dev/null 2>&1 || fail "shell worker: payload is not JSON"

# The work: a negative amount is a BPMN error, anything else succeeds.
if jq -e 'type == "object" and (.amount | type) == "number" and .amount < 0' <<<"$payload" >/dev/null; then
  reply='{"$pe":"bpmn_error","code":"invalid_amount","message":"amount must not be negative"}'
else
  reply=$(jq -c '{some: "result", echo: .}' <<<"$payload")
fi

if [[ -n "$id" ]]; then
  printf '%s' "$reply" >"$file.tmp" && mv "$file.tmp" "$file"
  echo "task $id: handled" >>"$state/handled.log"
  find "$state" -name '*.reply' -mmin +1440 -delete 2>/dev/null # settled tasks older than a day
fi
printf '%s' "$reply"
