'use strict';
// The three start variants of the official client against hello_world, with a worker finishing the task:
//   startProcessInstance                        → POST /process_models/hello_world/start, returnOn 1
//   startProcessInstanceAndAwaitEndEvent        → POST /process_models/:process_model_id/start (literal, API.md §2.2), returnOn 2
//   startProcessInstanceAndAwaitSpecificEndEvent→ same literal path, returnOn 3 + endEventId
const { engineClient, Runner, assert, assertEqual, expectError, waitFor, queryInstances, silentLogger } = require('./lib');

const MODEL = 'hello_world';
const TOPIC = 'SampleExternalTask';

new Runner('start').run(async (r) => {
  const client = r.client;
  const worker = new engineClient.ExternalTaskWorker(client.getEngineUrl(), TOPIC, async (payload) => ({ doubled: payload.n * 2 }),
    { workerId: 'conformance-start-worker', lockDuration: 10000, longpollingTimeout: 2000, idleTimeout: 50, logger: silentLogger });
  worker.start();
  try {
    await r.check('startProcessInstance (returnOn 1) with correlationId', async () => {
      const res = await client.processModels.startProcessInstance({
        processModelId: MODEL, correlationId: 'conformance-corr-1', initialToken: { n: 1 },
      });
      assertEqual(res.correlationId, 'conformance-corr-1', 'correlationId');
      assert(typeof res.processInstanceId === 'string' && res.processInstanceId !== '', 'processInstanceId missing', res);
      assert(res.tokenPayload === undefined && res.endEventId === undefined, 'returnOn 1 must not wait for the end', res);
      await waitFor('instance finished', async () => {
        const [pi] = await queryInstances(client, [res.processInstanceId]);
        return pi && pi.state === 'finished' && pi;
      });
      const [pi] = await queryInstances(client, [res.processInstanceId]);
      assertEqual(pi.correlationId, 'conformance-corr-1', 'instance correlationId');
      assertEqual(pi.endToken, { doubled: 2 }, 'endToken');
      return res;
    });

    await r.check('startProcessInstanceAndAwaitEndEvent (returnOn 2, literal :process_model_id path)', async () => {
      const res = await client.processModels.startProcessInstanceAndAwaitEndEvent({ processModelId: MODEL, initialToken: { n: 21 } });
      assert(typeof res.processInstanceId === 'string' && res.processInstanceId !== '', 'processInstanceId missing', res);
      assert(typeof res.correlationId === 'string' && res.correlationId !== '', 'correlationId missing', res);
      assertEqual(res.endEventId, 'the_end_event', 'endEventId');
      assertEqual(res.tokenPayload, { doubled: 42 }, 'tokenPayload');
      return res;
    });

    await r.check('startProcessInstanceAndAwaitSpecificEndEvent (returnOn 3)', async () => {
      const res = await client.processModels.startProcessInstanceAndAwaitSpecificEndEvent(
        { processModelId: MODEL, initialToken: { n: 5 } }, 'the_end_event');
      assertEqual(res.endEventId, 'the_end_event', 'endEventId');
      assertEqual(res.tokenPayload, { doubled: 10 }, 'tokenPayload');
      return res;
    });

    await r.check('startProcessInstance with explicit startEventId', async () => {
      const res = await client.processModels.startProcessInstanceAndAwaitEndEvent({
        processModelId: MODEL, startEventId: 'the_start_event', initialToken: { n: 3 },
      });
      assertEqual(res.tokenPayload, { doubled: 6 }, 'tokenPayload');
    });

    await r.check('start of an unknown process model is a 404', async () =>
      expectError(() => client.processModels.startProcessInstance({ processModelId: 'conformance_no_such_model' }), 404, 'unknown model'));
  } finally {
    worker.dispose();
  }
});
