#!/usr/bin/env bash
# Finish the waiting user tasks of the approval model by the seed's rules,
# with the nats CLI and jq: list them over pe.usertask.list, decide on each
# task's token, finish it over pe.usertask.finish; repeat every POLL seconds.
# Usage: ./approver.sh [--once]   (NATS_URL, MODEL=approval, POLL=2)
set -euo pipefail
server=${NATS_URL:-nats://127.0.0.1:4222}
model=${MODEL:-approval}
poll=${POLL:-2}
for tool in nats jq; do
  command -v "$tool" >/dev/null || { echo "approver.sh: $tool is not installed (see README.md)" >&2; exit 1; }
done

# decide: token JSON on stdin → user task result JSON (the seed's rules).
decide() {
  jq -c '(if (type == "object" and (has("amount") | not) and (.current | type) == "object") then .current else . end) as $t
    | if ($t | type) == "object" and ($t.amount | type) == "number" and $t.amount < 1000
        then {approved: true, autoApproved: true, reason: "amount below threshold"}
      elif ($t | type) == "object" and $t.customerType == "vip"
        then {approved: true, priority: "high", reason: "VIP customer"}
      else {approved: false, requiresReview: true, reason: "manual review required"} end'
}

approve_waiting() {
  local list
  list=$(nats --server "$server" req pe.usertask.list \
    "$(jq -nc --arg m "$model" '{processModelId: $m, state: "suspended"}')" --raw 2>/dev/null) || return 0
  jq -c '.userTasks[]? | {id: .userTaskInstanceId, token: (.token // null)}' <<<"$list" | while read -r task; do
    local id result
    id=$(jq -r .id <<<"$task")
    result=$(jq -c .token <<<"$task" | decide)
    if nats --server "$server" req pe.usertask.finish \
      "$(jq -nc --arg id "$id" --argjson r "$result" '{userTaskInstanceId: $id, result: $r}')" --raw >/dev/null; then
      echo "approver: finished user task $id: $result"
    fi
  done
}

while true; do
  approve_waiting
  [[ "${1:-}" == "--once" ]] && exit 0
  sleep "$poll"
done
