'use strict';
// A worker whose task is terminated (processInstances.terminateProcessInstance) learns it at its next
// lock extension: extend_lock answers 409, the client's AbortSignal fires and the result is dropped.
// lockDuration 1500 ms makes the client extend every max(1500-5000, 1000) = 1000 ms.
const { engineClient, Runner, assert, assertEqual, waitFor, queryInstances, rawRequest, silentLogger } = require('./lib');

const MODEL = 'hello_world';
const TOPIC = 'SampleExternalTask';
const WORKER_ID = 'conformance-abort-worker';

new Runner('abort').run(async (r) => {
  const client = r.client;
  const events = [];
  const errors = [];
  let task;
  let abortedAt;
  let handlerReturned = false;

  const worker = new engineClient.ExternalTaskWorker(client.getEngineUrl(), TOPIC, (payload, externalTask, signal) => {
    task = externalTask;
    return new Promise((resolve) => {
      signal.addEventListener('abort', () => {
        abortedAt = Date.now();
        resolve({ shouldBeDropped: true });
      });
      // Fallback so a missing abort fails the check instead of hanging the script.
      setTimeout(() => {
        handlerReturned = true;
        resolve({ shouldBeDropped: true });
      }, 10000);
    });
  }, { workerId: WORKER_ID, lockDuration: 1500, longpollingTimeout: 2000, idleTimeout: 50, maxTasks: 1, logger: silentLogger });
  worker.onHeartbeat((type, id) => events.push({ type, id, at: Date.now() }));
  worker.onWorkerError((type, err) => errors.push({ type, code: err?.code, name: err?.name, message: err?.message }));

  let pid;
  let terminatedAt;
  worker.start();
  try {
    await r.check('worker receives the task and extends its lock', async () => {
      const res = await client.processModels.startProcessInstance({ processModelId: MODEL, initialToken: { n: 1 } });
      pid = res.processInstanceId;
      await waitFor('task handed to the worker', async () => task !== undefined, 5000);
      assertEqual(task.processInstanceId, pid, 'task processInstanceId');
      await waitFor('first lock extension', async () => events.some((e) => e.type === 'extendLock'), 5000);
    });

    await r.check('terminateProcessInstance', async () => {
      await client.processInstances.terminateProcessInstance(pid);
      terminatedAt = Date.now();
      const [pi] = await queryInstances(client, [pid]);
      assertEqual(pi.state, 'terminated', 'instance state after terminate');
    });

    await r.check('AbortSignal fires at the next lock extension (409)', async () => {
      await waitFor('abort signal', async () => abortedAt !== undefined || handlerReturned, 6000);
      assert(abortedAt !== undefined, 'the AbortSignal never fired', { errors, events });
      const extendErrors = errors.filter((e) => e.type === 'extendLock');
      assert(extendErrors.length >= 1 && extendErrors.every((e) => e.code === 409), 'extendLock did not fail with 409', errors);
      assertEqual(errors.filter((e) => e.type !== 'extendLock'), [], 'other worker errors');
      assert(!events.some((e) => e.type === 'finishExternalTask'), 'worker finished an aborted task', events);
      return { abortAfterTerminateMs: abortedAt - terminatedAt, extendErrors };
    });

    await r.check('finish / extend_lock / error after termination answer 409 ConflictError', async () => {
      const out = {};
      for (const [verb, body] of [
        ['finish', { workerId: WORKER_ID, result: { late: true } }],
        ['extend_lock', { workerId: WORKER_ID, additionalDuration: 1000 }],
        ['error', { workerId: WORKER_ID, error: { errorCode: 'Late' } }],
      ]) {
        const res = await rawRequest('PUT', `/external_tasks/${encodeURIComponent(task.id)}/${verb}`, body);
        assertEqual(res.status, 409, `${verb} status`);
        assert(res.json && res.json.code === 409 && res.json.errorClassName === 'ConflictError', `${verb} body not a 409 ConflictError`, res.text);
        out[verb] = res.json.message;
      }
      return out;
    });

    await r.check('unknown external task answers 404 NotFoundError', async () => {
      const res = await rawRequest('PUT', '/external_tasks/conformance-no-such-task/extend_lock', { workerId: WORKER_ID, additionalDuration: 1000 });
      assertEqual(res.status, 404, 'status');
      assert(res.json && res.json.code === 404 && res.json.errorClassName === 'NotFoundError', 'body', res.text);
    });
  } finally {
    worker.dispose();
  }

  await r.check('timer boundary cancels the task: AbortSignal at the next extension', async () => {
    // timer_cancel: SlowTask with a 2 s timer boundary event ending at timeout_end.
    let aborted;
    let got;
    const errs = [];
    const w = new engineClient.ExternalTaskWorker(client.getEngineUrl(), 'SlowTask', (payload, externalTask, signal) => new Promise((resolve) => {
      got = externalTask;
      signal.addEventListener('abort', () => { aborted = Date.now(); resolve({ late: true }); });
      setTimeout(() => resolve({ late: true }), 8000);
    }), { workerId: 'conformance-timer-worker', lockDuration: 1500, longpollingTimeout: 2000, idleTimeout: 50, maxTasks: 1, logger: silentLogger });
    w.onWorkerError((type, err) => errs.push({ type, code: err?.code }));
    w.start();
    try {
      const startedAt = Date.now();
      const res = await client.processModels.startProcessInstanceAndAwaitEndEvent({ processModelId: 'timer_cancel', initialToken: { t: 1 } });
      assertEqual(res.endEventId, 'timeout_end', 'endEventId');
      assert(got && got.processInstanceId === res.processInstanceId, 'the worker never got the task', got);
      await waitFor('abort after the timer', async () => aborted !== undefined, 4000);
      assert(errs.length >= 1 && errs.every((e) => e.type === 'extendLock' && e.code === 409), 'extendLock errors', errs);
      return { endAfterMs: Date.now() - startedAt, abortAfterStartMs: aborted - startedAt };
    } finally {
      w.dispose();
    }
  });
});
