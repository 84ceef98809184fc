// The seed's SampleExternalTask worker: every task of the hello_world model
// gets {"some":"result","echo":<payload>}.
//
//   node worker.js          (NATS_URL, default nats://127.0.0.1:4222)
"use strict";

const c = require("./contract");

function handle(task) {
  if (task.payload && typeof task.payload.amount === "number" && task.payload.amount < 0) {
    // A BPMN error: an error boundary event with errorCode "invalid_amount" catches it.
    return c.bpmnError("invalid_amount", "amount must not be negative", { amount: task.payload.amount });
  }
  return c.success({ some: "result", echo: task.payload });
}

// runWorker serves topic until the subscription ends (nc.drain()).
async function runWorker(nc, topic = "SampleExternalTask", log = console.log) {
  const token = c.topicToken(topic);
  const cancels = nc.subscribe(c.CANCEL_PREFIX + token); // no queue group: every replica hears cancels
  (async () => {
    for await (const m of cancels) log(`worker: task ${m.headers ? m.headers.get("ce-id") : "?"} cancelled by the engine`);
  })();
  const sub = nc.subscribe(c.TASK_PREFIX + token, { queue: c.QUEUE_GROUP });
  log(`worker: serving topic ${topic} on ${c.TASK_PREFIX + token}`);
  for await (const m of sub) {
    let reply;
    try {
      const task = c.parseTask(m);
      log(`worker: task ${task.id} of process ${task.processInstanceId} (${task.processModelId}): payload ${JSON.stringify(task.payload)}`);
      reply = handle(task);
    } catch (err) {
      reply = c.failure(`node worker: ${err.message}`, 1000); // technical failure: the bridge retries
    }
    m.respond(new TextEncoder().encode(reply));
  }
}

module.exports = { runWorker, handle };

if (require.main === module) {
  c.main(async () => {
    const nc = await c.connectFromEnv("pe-bridge-example-node-worker");
    await runWorker(nc);
    await nc.closed();
  });
}
