// The approver: lists the waiting user tasks of the approval model over
// pe.usertask.list and finishes each over pe.usertask.finish by the seed's
// rules. It looks whenever pe.event.user_task_waiting arrives and every
// pollMs (engine events are hints, not a log).
//
//   node approver.js        (NATS_URL, default nats://127.0.0.1:4222)
"use strict";

const c = require("./contract");

// decide applies the seed's rules to the token the user task was entered with.
function decide(token) {
  let t = token && typeof token === "object" ? token : {};
  if (t.amount === undefined && t.current && typeof t.current === "object") t = t.current;
  if (typeof t.amount === "number" && t.amount < 1000) {
    return { approved: true, autoApproved: true, reason: "amount below threshold" };
  }
  if (t.customerType === "vip") return { approved: true, priority: "high", reason: "VIP customer" };
  return { approved: false, requiresReview: true, reason: "manual review required" };
}

async function call(nc, subject, body) {
  const m = await nc.request(subject, new TextEncoder().encode(JSON.stringify(body)), { timeout: 30000 });
  if (m.headers && m.headers.get("Nats-Service-Error-Code")) {
    throw new Error(`${subject}: error ${m.headers.get("Nats-Service-Error-Code")}: ${m.headers.get("Nats-Service-Error")}`);
  }
  return m.data.length ? JSON.parse(new TextDecoder().decode(m.data)) : null;
}

async function approveWaiting(nc, model, log) {
  const list = await call(nc, "pe.usertask.list", { processModelId: model, state: "suspended" });
  for (const ut of list.userTasks || []) {
    const result = decide(ut.token);
    try {
      await call(nc, "pe.usertask.finish", { userTaskInstanceId: ut.userTaskInstanceId, result });
      log(`approver: finished user task ${ut.userTaskInstanceId} (${ut.flowNodeId}) of process ${ut.processInstanceId}: ${JSON.stringify(result)}`);
    } catch (err) {
      log(`approver: finishing ${ut.userTaskInstanceId}: ${err.message}`);
    }
  }
}

// runApprover works until signal aborts.
async function runApprover(nc, { model = "approval", pollMs = 2000, signal, log = console.log } = {}) {
  let wake;
  const events = nc.subscribe("pe.event.user_task_waiting");
  (async () => {
    for await (const _ of events) if (wake) wake();
  })();
  if (signal) signal.addEventListener("abort", () => wake && wake(), { once: true });
  log(`approver: finishing waiting user tasks of ${model}`);
  while (!signal || !signal.aborted) {
    try {
      await approveWaiting(nc, model, log);
    } catch (err) {
      if (!nc.isClosed() && !nc.isDraining()) log(`approver: ${err.message}`);
    }
    await new Promise((resolve) => {
      const t = setTimeout(resolve, pollMs);
      wake = () => { clearTimeout(t); resolve(); };
    });
  }
  try {
    events.unsubscribe();
  } catch (_) {
    // the connection is draining or closed: the subscription ends with it
  }
}

module.exports = { decide, runApprover };

if (require.main === module) {
  c.main(async () => {
    const stop = new AbortController();
    const nc = await c.connectFromEnv("pe-bridge-example-node-approver", () => stop.abort());
    await runApprover(nc, { signal: stop.signal });
    await nc.closed();
  });
}
