// Path (b) of the side-by-side benchmark (go run ./bench): the official
// ProcessCube ExternalTaskWorker (@5minds/processcube_engine_client 6.1.4,
// pinned in package-lock.json) working directly on the engine emulator.
//
// Usage: node worker.js --engine-url URL --topic T [--max-tasks 10]
//        [--lock-duration 30000] [--cost-ms 0] [--worker-id ID]
//
// Every option not given keeps the client's default (maxTasks 10,
// lockDuration 30000, longpollingTimeout 10000, idleTimeout 500), the way
// users run it. The handler returns {} after cost-ms milliseconds. It prints
// "ready" once the worker polls and stops on SIGTERM/SIGINT.
'use strict';

const { ExternalTaskWorker } = require('@5minds/processcube_engine_client');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      throw new Error(`unexpected argument ${a}`);
    }
    const eq = a.indexOf('=');
    if (eq > 0) {
      out[a.slice(2, eq)] = a.slice(eq + 1);
    } else {
      out[a.slice(2)] = argv[++i];
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const engineUrl = args['engine-url'];
const topic = args.topic;
if (!engineUrl || !topic) {
  console.error('usage: node worker.js --engine-url URL --topic T [--max-tasks N] [--lock-duration MS] [--cost-ms MS]');
  process.exit(2);
}
const costMs = Number(args['cost-ms'] ?? 0);
const config = {};
if (args['max-tasks'] !== undefined) config.maxTasks = Number(args['max-tasks']);
if (args['lock-duration'] !== undefined) config.lockDuration = Number(args['lock-duration']);
if (args['worker-id'] !== undefined) config.workerId = args['worker-id'];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function handle(payload, externalTask, abortSignal) {
  if (costMs > 0) {
    await sleep(costMs);
  }
  return {};
}

const worker = new ExternalTaskWorker(engineUrl, topic, handle, config);
worker.onWorkerError((errorType, error) => {
  console.error(`worker error (${errorType}): ${error && error.message}`);
});
worker.start();
console.log('ready');

function stop() {
  worker.dispose();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
