'use strict';
// Notifications over Socket.IO, as the official client receives them (Clients/Lib/SocketIoManager.js):
// namespace "api", path "<engine url path>/socket.io", the token in an Authorization header without
// "Bearer". client.notification.on* and client.userTasks.onUserTaskWaiting must receive the
// emulator's events with the EventMessage payload of API.md §2.7.
const { io } = require('socket.io-client');
const { engineUrl, Runner, assert, assertEqual, rawRequest, DUMMY_TOKEN } = require('./lib');


const DEPLOYED = `<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
    id="Definitions_conformance_notify" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="conformance_notify" name="Conformance notify" isExecutable="true">
    <bpmn:startEvent id="StartEvent_1"><bpmn:outgoing>Flow_1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="Flow_1" sourceRef="StartEvent_1" targetRef="Task_1" />
    <bpmn:serviceTask id="Task_1" camunda:type="external" camunda:topic="ConformanceNotifyTopic">
      <bpmn:incoming>Flow_1</bpmn:incoming><bpmn:outgoing>Flow_2</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="Flow_2" sourceRef="Task_1" targetRef="EndEvent_1" />
    <bpmn:endEvent id="EndEvent_1"><bpmn:incoming>Flow_2</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>
`;

// inbox collects the messages of one subscription and lets a check wait for one matching a predicate.
class Inbox {
  constructor() { this.msgs = []; this.waiters = []; }
  push(m) {
    this.msgs.push(m);
    this.waiters = this.waiters.filter((w) => !w.try());
  }
  wait(what, pred, timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      const w = {
        try: () => {
          const m = this.msgs.find(pred);
          if (m) { clearTimeout(w.timer); resolve(m); return true; }
          return false;
        },
      };
      if (w.try()) return;
      w.timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms; got ${JSON.stringify(this.msgs.slice(-5))}`)), timeoutMs);
      this.waiters.push(w);
    });
  }
}

function baseFields(m, what) {
  for (const k of ['correlationId', 'processDefinitionId', 'processModelId', 'processInstanceId', 'ownerId']) {
    assert(typeof m[k] === 'string' && m[k] !== '', `${what}: ${k} must be a non-empty string`, m);
  }
  assert(m.currentToken !== null && typeof m.currentToken === 'object', `${what}: currentToken must be an object`, m);
}

new Runner('notifications').run(async (r) => {
  const client = r.client;
  const inbox = {};
  const sub = async (name, fn) => {
    inbox[name] = new Inbox();
    await fn((m) => inbox[name].push(m));
  };

  await r.check('socket connects (namespace api, Authorization without Bearer)', async () => {
    const connected = new Promise((resolve) => client.notification.onConnected(() => resolve(), true));
    await sub('started', (cb) => client.notification.onProcessStarted(cb));
    await sub('ended', (cb) => client.notification.onProcessEnded(cb));
    await sub('terminated', (cb) => client.notification.onProcessTerminated(cb));
    await sub('error', (cb) => client.notification.onProcessError(cb));
    await sub('deployed', (cb) => client.notification.onProcessDeployed(cb));
    await sub('taskCreated', (cb) => client.notification.onExternalTaskCreated(cb));
    await sub('waiting', (cb) => client.userTasks.onUserTaskWaiting(cb));
    await sub('finished', (cb) => client.userTasks.onUserTaskFinished(cb));
    await sub('reserved', (cb) => client.userTasks.onUserTaskReserved(cb));
    await connected;
  });

  await r.check('onProcessStarted and onProcessEnded', async () => {
    const res = await client.processModels.startProcessInstance({ processModelId: 'approval', initialToken: { amount: 10 } });
    const pid = res.processInstanceId;
    const started = await inbox.started.wait('OnProcessStarted', (m) => m.processInstanceId === pid);
    baseFields(started, 'OnProcessStarted');
    assertEqual(started.processModelId, 'approval', 'processModelId');
    assertEqual(started.correlationId, res.correlationId, 'correlationId');
    assertEqual(started.currentToken, { amount: 10 }, 'currentToken of process_started');
    const ended = await inbox.ended.wait('OnProcessFinished', (m) => m.processInstanceId === pid);
    baseFields(ended, 'OnProcessFinished');
    return { started, ended };
  });

  await r.check('userTasks.onUserTaskWaiting, onUserTaskReserved and onUserTaskFinished', async () => {
    const res = await client.processModels.startProcessInstance({ processModelId: 'approval', initialToken: { amount: 5000 } });
    const pid = res.processInstanceId;
    const waiting = await inbox.waiting.wait('user_task_waiting', (m) => m.processInstanceId === pid);
    baseFields(waiting, 'user_task_waiting');
    assertEqual(waiting.flowNodeId, 'manual_approval', 'flowNodeId');
    assertEqual(waiting.flowNodeType, 'bpmn:UserTask', 'flowNodeType');
    assert(typeof waiting.flowNodeInstanceId === 'string' && waiting.flowNodeInstanceId !== '', 'flowNodeInstanceId', waiting);
    assertEqual(waiting.currentToken, { amount: 5000 }, 'currentToken');
    await client.userTasks.reserveUserTaskInstance(undefined, waiting.flowNodeInstanceId, 'alice');
    await inbox.reserved.wait('user_task_reserved', (m) => m.flowNodeInstanceId === waiting.flowNodeInstanceId);
    await client.userTasks.finishUserTask(waiting.flowNodeInstanceId, { approved: true });
    const finished = await inbox.finished.wait('user_task_finished', (m) => m.flowNodeInstanceId === waiting.flowNodeInstanceId);
    baseFields(finished, 'user_task_finished');
    assertEqual(finished.userTaskResult, { approved: true }, 'userTaskResult');
    await inbox.ended.wait('OnProcessFinished', (m) => m.processInstanceId === pid);
    return { waiting, finished };
  });

  await r.check('onProcessTerminated and onProcessError', async () => {
    const a = await client.processModels.startProcessInstance({ processModelId: 'signal_catch' });
    await inbox.started.wait('OnProcessStarted', (m) => m.processInstanceId === a.processInstanceId);
    await client.processInstances.terminateProcessInstance(a.processInstanceId);
    const term = await inbox.terminated.wait('OnProcessTerminated', (m) => m.processInstanceId === a.processInstanceId);
    baseFields(term, 'OnProcessTerminated');

    const b = await client.processModels.startProcessInstance({ processModelId: 'error_boundary', initialToken: { customer: 'c', amount: 1 } });
    const fetched = await rawRequest('POST', '/external_tasks/fetch_and_lock',
      { workerId: 'w', topicName: 'CheckCredit', maxTasks: 10, longPollingTimeout: 5000, lockDuration: 60000 });
    const task = (fetched.json || []).find((t) => t.processInstanceId === b.processInstanceId);
    assert(task, 'CheckCredit task fetched', fetched);
    const res = await rawRequest('PUT', `/external_tasks/${task.id}/error`, { workerId: 'w', error: { errorCode: 'unhandled', errorMessage: 'x' } });
    assertEqual(res.status, 204, 'error status');
    const err = await inbox.error.wait('OnProcessError', (m) => m.processInstanceId === b.processInstanceId);
    baseFields(err, 'OnProcessError');
  });

  await r.check('onProcessDeployed and onExternalTaskCreated', async () => {
    await client.processDefinitions.persistProcessDefinitions(DEPLOYED, { overwriteExisting: true });
    const dep = await inbox.deployed.wait('process_deployed', (m) => {
      const ids = Array.isArray(m.processDefinitionId) ? m.processDefinitionId : [m.processDefinitionId];
      return ids.includes('Definitions_conformance_notify');
    });
    const res = await client.processModels.startProcessInstance({ processModelId: 'conformance_notify' });
    const created = await inbox.taskCreated.wait('external_task_created', (m) => m.processInstanceId === res.processInstanceId);
    assertEqual(created.topic, 'ConformanceNotifyTopic', 'topic');
    assert(typeof created.externalTaskId === 'string' && created.externalTaskId !== '', 'externalTaskId', created);
    return { deployed: dep, created };
  });

  await r.check('a socket with a wrong token is refused', async () => {
    const u = new URL(engineUrl);
    const path = (u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '')) + '/socket.io';
    const bad = io(`${u.origin}/api`, { path, transportOptions: { polling: { extraHeaders: { Authorization: 'not-a-token', userId: 'x' } } }, reconnection: false });
    try {
      const err = await new Promise((resolve, reject) => {
        bad.on('connect', () => reject(new Error('connected with a wrong token')));
        bad.on('connect_error', resolve);
      });
      const good = io(`${u.origin}/api`, { path, transportOptions: { polling: { extraHeaders: { Authorization: DUMMY_TOKEN, userId: 'dummy_token' } } }, reconnection: false });
      try {
        await new Promise((resolve, reject) => {
          good.on('connect', resolve);
          good.on('connect_error', reject);
        });
      } finally {
        good.disconnect();
      }
      return { refused: err.message };
    } finally {
      bad.disconnect();
    }
  });

  client.dispose();
});
