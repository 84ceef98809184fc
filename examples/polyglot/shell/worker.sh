#!/usr/bin/env bash
# Serve the SampleExternalTask topic with the nats CLI: every task event on
# pe.task.SampleExternalTask (queue group pe-handlers) is answered by
# handle-task.sh. Usage: ./worker.sh   (NATS_URL, default nats://127.0.0.1:4222)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v nats >/dev/null || { echo "worker.sh: the nats CLI is not installed (see README.md)" >&2; exit 1; }
exec nats --server "${NATS_URL:-nats://127.0.0.1:4222}" reply pe.task.SampleExternalTask \
  --queue pe-handlers --command "$here/handle-task.sh"
