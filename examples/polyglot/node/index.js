// pe-bridge polyglot example for Node.js: the SampleExternalTask worker and
// the approval approver in one process (worker.js and approver.js also run
// alone).
//
//   npm ci && npm start          (NATS_URL, default nats://127.0.0.1:4222)
"use strict";

const c = require("./contract");
const { runWorker } = require("./worker");
const { runApprover } = require("./approver");

c.main(async () => {
  const stop = new AbortController();
  const nc = await c.connectFromEnv("pe-bridge-example-node", () => stop.abort());
  const jobs = [];
  if (process.env.EXAMPLE_WORKER !== "false") jobs.push(runWorker(nc));
  if (process.env.EXAMPLE_APPROVER !== "false") jobs.push(runApprover(nc, { signal: stop.signal }));
  await Promise.all(jobs);
  await nc.closed();
});
