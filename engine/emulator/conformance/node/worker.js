'use strict';
// The official ExternalTaskWorker processes hello_world tasks end to end: N instances are started,
// two workers (maxTasks 2 each) lock, process and finish every task exactly once, and every instance
// finishes with the worker's result as its end token. Then a worker on error_boundary's CheckCredit
// topic throws for one customer: the client reports it via /error and the boundary event catches it.
const { engineClient, Runner, assert, assertEqual, waitFor, queryInstances, silentLogger } = require('./lib');

const MODEL = 'hello_world';
const TOPIC = 'SampleExternalTask';
const N = 6;

new Runner('worker').run(async (r) => {
  const client = r.client;
  const seen = {}; // externalTask.id -> number of handler calls
  const tasks = [];
  const makeWorker = (workerId) =>
    new engineClient.ExternalTaskWorker(r.client.getEngineUrl(), TOPIC, async (payload, externalTask) => {
      seen[externalTask.id] = (seen[externalTask.id] || 0) + 1;
      tasks.push({ payload, externalTask: { ...externalTask }, workerId });
      return { greeting: `hello ${payload.name}`, index: payload.index, handledBy: workerId };
    }, { workerId, maxTasks: 2, lockDuration: 10000, longpollingTimeout: 2000, idleTimeout: 50, logger: silentLogger });

  const workers = [makeWorker('conformance-worker-a'), makeWorker('conformance-worker-b')];
  const workerErrors = [];
  for (const w of workers) {
    w.onWorkerError((type, err) => workerErrors.push({ type, code: err?.code, message: err?.message }));
  }

  const started = [];
  await r.check('start instances (returnOn 1)', async () => {
    for (let i = 0; i < N; i++) {
      const res = await client.processModels.startProcessInstance({
        processModelId: MODEL,
        initialToken: { name: `n${i}`, index: i },
      });
      assert(typeof res.processInstanceId === 'string' && res.processInstanceId !== '', 'processInstanceId missing', res);
      assert(typeof res.correlationId === 'string' && res.correlationId !== '', 'correlationId missing', res);
      assert(res.endEventId === undefined, 'endEventId must be absent for returnOn 1', res);
      started.push({ id: res.processInstanceId, index: i });
    }
    return started.length;
  });

  workers.forEach((w) => w.start());
  const ids = started.map((s) => s.id);
  try {
    await r.check('all instances finish', async () => {
      await waitFor('all instances finished', async () => {
        const pis = await queryInstances(client, ids);
        return pis.length === N && pis.every((pi) => pi.state === 'finished');
      }, 15000, 100);
    });
  } finally {
    workers.forEach((w) => w.dispose());
  }

  await r.check('each task handled exactly once', async () => {
    const counts = Object.values(seen);
    assertEqual(counts.length, N, 'distinct external tasks handled');
    assert(counts.every((c) => c === 1), 'a task was handled more than once', seen);
    assertEqual(workerErrors, [], 'worker errors');
  });

  await r.check('external task fields', async () => {
    for (const t of tasks) {
      const et = t.externalTask;
      assertEqual(et.topic, TOPIC, 'topic');
      assertEqual(et.workerId, t.workerId, 'workerId');
      assert(ids.includes(et.processInstanceId), 'processInstanceId not one of ours', et);
      assertEqual(et.processModelId, MODEL, 'processModelId');
      assertEqual(et.isSingleTry, false, 'isSingleTry');
      assertEqual(et.state, 'pending', 'state');
      for (const f of ['id', 'flowNodeInstanceId', 'correlationId', 'processDefinitionId', 'ownerId']) {
        assert(typeof et[f] === 'string' && et[f] !== '', `${f} missing`, et);
      }
      assert(et.lockExpirationTime instanceof Date && !isNaN(et.lockExpirationTime), 'lockExpirationTime not a date', et);
      const lockMs = et.lockExpirationTime.getTime() - Date.now();
      assert(lockMs > 0 && lockMs <= 11000, `lockExpirationTime not about now+lockDuration (${lockMs} ms)`);
      assertEqual(t.payload, { name: `n${t.payload.index}`, index: t.payload.index }, 'payload = start token');
    }
    return { tasks: tasks.length };
  });

  await r.check('end token is the worker result', async () => {
    const pis = await queryInstances(client, ids);
    for (const pi of pis) {
      const s = started.find((x) => x.id === pi.processInstanceId);
      const task = tasks.find((t) => t.externalTask.processInstanceId === pi.processInstanceId);
      assert(task, 'no task seen for instance', pi.processInstanceId);
      assertEqual(pi.endToken, { greeting: `hello n${s.index}`, index: s.index, handledBy: task.workerId }, 'endToken');
      assertEqual(pi.processModelId, MODEL, 'processModelId');
      assertEqual(pi.endEventId, 'the_end_event', 'endEventId');
      assert(pi.finishedAt instanceof Date && !isNaN(pi.finishedAt), 'finishedAt missing', pi);
    }
  });

  await r.check('thrown error is caught by the error boundary', async () => {
    const seenPayloads = [];
    const w = new engineClient.ExternalTaskWorker(client.getEngineUrl(), 'CheckCredit', async (payload) => {
      seenPayloads.push(payload);
      if (payload.customer === 'mallory') {
        const err = new Error('credit rejected for mallory');
        err.errorCode = 'credit_rejected';
        throw err;
      }
      return { creditOk: true };
    }, { workerId: 'conformance-credit-worker', lockDuration: 10000, longpollingTimeout: 2000, idleTimeout: 50, logger: silentLogger });
    const errs = [];
    w.onWorkerError((type, err) => errs.push({ type, code: err?.code, message: err?.message }));
    w.start();
    try {
      const bad = await client.processModels.startProcessInstanceAndAwaitEndEvent({
        processModelId: 'error_boundary', initialToken: { customer: 'mallory', amount: 900, extra: 'not in payload' } });
      assertEqual(bad.endEventId, 'error_end', 'endEventId after a thrown error');
      const good = await client.processModels.startProcessInstanceAndAwaitEndEvent({
        processModelId: 'error_boundary', initialToken: { customer: 'alice', amount: 100 } });
      assertEqual(good.endEventId, 'ok_end', 'endEventId after success');
      assertEqual(good.tokenPayload, { creditOk: true }, 'tokenPayload after success');
      assertEqual(seenPayloads, [{ customer: 'mallory', amount: 900 }, { customer: 'alice', amount: 100 }], 'payload expression result');
      // The handler error itself is reported by the worker as a processExternalTask error, nothing else.
      assert(errs.every((e) => e.type === 'processExternalTask'), 'unexpected worker errors', errs);
      return { bad, good };
    } finally {
      w.dispose();
    }
  });
});
