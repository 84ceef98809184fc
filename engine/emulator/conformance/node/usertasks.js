'use strict';
// User tasks of the approval model through the official client: query (with filters), reserve,
// cancel the reservation, finish; the result drives the model's gateways.
//   approval: amount > 1000 ? manual_approval (approved, comment, amount, category, due) → approved? : auto_approve
const { Runner, assert, assertEqual, expectError, waitFor, queryInstances } = require('./lib');

const MODEL = 'approval';
const TASK = 'manual_approval';

new Runner('usertasks').run(async (r) => {
  const client = r.client;
  const ut = client.userTasks;

  const a = await client.processModels.startProcessInstance({ processModelId: MODEL, initialToken: { amount: 5000, requester: 'alice' } });
  const b = await client.processModels.startProcessInstance({ processModelId: MODEL, initialToken: { amount: 2000, requester: 'bob' } });
  const waiting = async (pid) => waitFor(`${TASK} waiting in ${pid}`, async () => {
    const res = await ut.query({ processInstanceId: pid, state: 'suspended' });
    return res.userTasks.find((t) => t.flowNodeId === TASK);
  }, 5000);

  let taskA;
  let taskB;
  await r.check('user task appears with form fields', async () => {
    taskA = await waiting(a.processInstanceId);
    taskB = await waiting(b.processInstanceId);
    assertEqual(taskA.flowNodeType, 'bpmn:UserTask', 'flowNodeType');
    assertEqual(taskA.state, 'suspended', 'state');
    assertEqual(taskA.flowNodeName, 'Approve request', 'flowNodeName');
    assertEqual(taskA.flowNodeLane, 'Manager', 'flowNodeLane');
    assertEqual(taskA.processModelId, MODEL, 'processModelId');
    assertEqual(taskA.processInstanceId, a.processInstanceId, 'processInstanceId');
    assertEqual(taskA.correlationId, a.correlationId, 'correlationId');
    assertEqual(taskA.startToken, { amount: 5000, requester: 'alice' }, 'startToken');
    assert(typeof taskA.flowNodeInstanceId === 'string' && taskA.flowNodeInstanceId !== '', 'flowNodeInstanceId', taskA);
    assert(typeof taskA.ownerId === 'string' && taskA.ownerId !== '', 'ownerId', taskA);
    const cfg = taskA.userTaskConfig;
    assert(cfg && Array.isArray(cfg.formFields), 'userTaskConfig.formFields missing', taskA);
    assertEqual(cfg.formFields.map((f) => [f.id, f.type]),
      [['approved', 'boolean'], ['comment', 'textarea'], ['amount', 'number'], ['category', 'enum'], ['due', 'date']], 'form fields');
    const amount = cfg.formFields[2];
    assertEqual(amount.label, 'Amount (EUR)', 'amount label');
    assertEqual(String(amount.defaultValue), '0', 'amount defaultValue');
    assertEqual(amount.parsedCustomForm, { step: 0.01, hint: 'Total amount' }, 'amount parsedCustomForm');
    assertEqual(cfg.formFields[3].enumValues, [{ id: 'travel', name: 'Travel' }, { id: 'hardware', name: 'Hardware' }, { id: 'other', name: 'Other' }], 'enumValues');
    assertEqual(cfg.formFields[3].defaultValue, 'travel', 'enum defaultValue');
    assertEqual(cfg.description, 'Amounts above 1000 EUR need a manager\'s approval.', 'description');
    assertEqual(cfg.finishedMessage, 'Thank you, your decision was recorded.', 'finishedMessage');
    assert(taskA.startedAt instanceof Date && !isNaN(taskA.startedAt), 'startedAt', taskA);
    return { flowNodeInstanceId: taskA.flowNodeInstanceId };
  });

  await r.check('query filters', async () => {
    const both = await ut.query({ processInstanceId: [a.processInstanceId, b.processInstanceId], state: 'suspended' });
    assertEqual(both.userTasks.map((t) => t.processInstanceId).sort(), [a.processInstanceId, b.processInstanceId].sort(), 'list filter');
    assertEqual(both.totalCount, 2, 'totalCount');
    const onlyB = await ut.query({ processInstanceId: b.processInstanceId });
    assertEqual(onlyB.userTasks.map((t) => t.flowNodeInstanceId), [taskB.flowNodeInstanceId], 'processInstanceId filter');
    const byNode = await ut.query({ flowNodeId: TASK, processModelId: MODEL, flowNodeLane: 'Manager' });
    assertEqual(byNode.totalCount, 2, 'flowNodeId+processModelId+flowNodeLane filter');
    const byId = await ut.query({ flowNodeInstanceId: taskA.flowNodeInstanceId });
    assertEqual(byId.userTasks.map((t) => t.processInstanceId), [a.processInstanceId], 'flowNodeInstanceId filter');
    const byCorr = await ut.query({ correlationId: b.correlationId });
    assertEqual(byCorr.userTasks.map((t) => t.flowNodeInstanceId), [taskB.flowNodeInstanceId], 'correlationId filter');
    const none = await ut.query({ processInstanceId: a.processInstanceId, state: 'finished' });
    assertEqual(none.totalCount, 0, 'finished user tasks of a fresh instance');
    const page = await ut.query({ processModelId: MODEL }, { limit: 1 });
    assertEqual(page.userTasks.length, 1, 'limit 1');
    assertEqual(page.totalCount, 2, 'totalCount ignores limit');
    const other = await ut.query({ processModelId: 'hello_world' });
    assertEqual(other.totalCount, 0, 'user tasks of a model without user tasks');
  });

  await r.check('reserve', async () => {
    await ut.reserveUserTaskInstance(undefined, taskA.flowNodeInstanceId, 'user123');
    const res = await ut.query({ flowNodeInstanceId: taskA.flowNodeInstanceId });
    assertEqual(res.userTasks[0].actualOwnerId, 'user123', 'actualOwnerId');
    assertEqual(res.userTasks[0].state, 'suspended', 'state while reserved');
  });

  await r.check('cancel reservation', async () => {
    await ut.cancelUserTaskInstanceReservation(undefined, taskA.flowNodeInstanceId);
    const res = await ut.query({ flowNodeInstanceId: taskA.flowNodeInstanceId });
    assert(res.userTasks[0].actualOwnerId == null || res.userTasks[0].actualOwnerId === '', 'actualOwnerId after cancel', res.userTasks[0]);
  });

  await r.check('finish', async () => {
    const result = { approved: true, comment: 'ok', amount: 5000, category: 'hardware', due: '2026-12-24' };
    await ut.finishUserTask(taskA.flowNodeInstanceId, result);
    const done = await ut.query({ flowNodeInstanceId: taskA.flowNodeInstanceId });
    assertEqual(done.userTasks[0].state, 'finished', 'state after finish');
    assertEqual(done.userTasks[0].endToken, result, 'endToken = result');
    assert(done.userTasks[0].finishedAt instanceof Date && !isNaN(done.userTasks[0].finishedAt), 'finishedAt', done.userTasks[0]);
    await waitFor('instance A finished', async () => (await queryInstances(client, [a.processInstanceId]))[0]?.state === 'finished', 5000);
    const [pi] = await queryInstances(client, [a.processInstanceId]);
    assertEqual(pi.endEventId, 'approved_end', 'endEventId (approved)');
    assertEqual(pi.endToken, result, 'endToken');
  });

  await r.check('finish with a rejection takes the other branch', async () => {
    await ut.finishUserTask(taskB.flowNodeInstanceId, { approved: false, comment: 'too much' });
    await waitFor('instance B finished', async () => (await queryInstances(client, [b.processInstanceId]))[0]?.state === 'finished', 5000);
    const [pi] = await queryInstances(client, [b.processInstanceId]);
    assertEqual(pi.endEventId, 'rejected_end', 'endEventId (rejected)');
  });

  await r.check('small amounts are approved without a user task', async () => {
    const res = await client.processModels.startProcessInstanceAndAwaitEndEvent({ processModelId: MODEL, initialToken: { amount: 10 } });
    assertEqual(res.endEventId, 'approved_end', 'endEventId');
    assertEqual(res.tokenPayload, { approved: true, autoApproved: true, amount: 10 }, 'tokenPayload');
    const tasks = await ut.query({ processInstanceId: res.processInstanceId });
    assertEqual(tasks.totalCount, 0, 'user tasks of an auto-approved instance');
  });

  await r.check('finishing a finished user task is a 409', async () =>
    expectError(() => ut.finishUserTask(taskA.flowNodeInstanceId, { approved: true }), 409, 'second finish'));

  await r.check('reserving an unknown user task is a 404', async () =>
    expectError(() => ut.reserveUserTaskInstance(undefined, 'conformance-no-such-task', 'user123'), 404, 'unknown user task'));
});
