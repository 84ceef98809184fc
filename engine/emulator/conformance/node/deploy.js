'use strict';
// Deployment through the client's processDefinitions client: persist BPMN XML (string and array form,
// overwriteExisting), then find and start the deployed models.
const fs = require('fs');
const os = require('os');
const path = require('path');
const { engineClient, Runner, assert, assertEqual, silentLogger, DUMMY_TOKEN } = require('./lib');

function bpmn(id, body) {
  return `<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
    id="Definitions_${id}" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="${id}" name="Conformance ${id}" isExecutable="true">
${body}
  </bpmn:process>
</bpmn:definitions>
`;
}

const DIRECT = bpmn('conformance_direct', `
    <bpmn:startEvent id="StartEvent_1" name="Start"><bpmn:outgoing>Flow_1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="Flow_1" sourceRef="StartEvent_1" targetRef="EndEvent_1" />
    <bpmn:endEvent id="EndEvent_1" name="End"><bpmn:incoming>Flow_1</bpmn:incoming></bpmn:endEvent>`);

const EXTERNAL = bpmn('conformance_external', `
    <bpmn:startEvent id="StartEvent_1" name="Start"><bpmn:outgoing>Flow_1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="Flow_1" sourceRef="StartEvent_1" targetRef="Task_1" />
    <bpmn:serviceTask id="Task_1" name="Deployed task" camunda:type="external" camunda:topic="ConformanceDeployedTopic">
      <bpmn:incoming>Flow_1</bpmn:incoming><bpmn:outgoing>Flow_2</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="Flow_2" sourceRef="Task_1" targetRef="EndEvent_1" />
    <bpmn:endEvent id="EndEvent_1" name="End"><bpmn:incoming>Flow_2</bpmn:incoming></bpmn:endEvent>`);

new Runner('deploy').run(async (r) => {
  const client = r.client;

  await r.check('persistProcessDefinitions (single XML string)', async () => {
    await client.processDefinitions.persistProcessDefinitions(DIRECT, { overwriteExisting: true });
  });

  await r.check('persistProcessDefinitions again with overwriteExisting', async () => {
    await client.processDefinitions.persistProcessDefinitions(DIRECT, { overwriteExisting: true });
  });

  await r.check('deployFiles (XML array)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pe-conformance-'));
    const file = path.join(dir, 'external.bpmn');
    fs.writeFileSync(file, EXTERNAL);
    try {
      await client.processDefinitions.deployFiles([file], { overwriteExisting: true });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  await r.check('deployed models are listed and readable', async () => {
    const all = await client.processModels.getAll();
    const ids = all.processModels.map((m) => m.processModelId);
    assert(ids.includes('conformance_direct') && ids.includes('conformance_external'), 'deployed models missing from list', ids);
    assert(all.totalCount >= ids.length, 'totalCount smaller than list', all.totalCount);
    const m = await client.processModels.getById('conformance_direct');
    assertEqual(m.processModelId, 'conformance_direct', 'processModelId');
    assertEqual(m.processModelName, 'Conformance conformance_direct', 'processModelName');
    assertEqual(m.isExecutable, true, 'isExecutable');
    assertEqual(m.startEvents.map((e) => e.id), ['StartEvent_1'], 'startEvents');
    assertEqual(m.endEvents.map((e) => e.id), ['EndEvent_1'], 'endEvents');
    return ids;
  });

  await r.check('deployed topic is listed by deployed_topics', async () => {
    const api = new engineClient.ExternalTaskApiClient(client.getEngineUrl(), { token: DUMMY_TOKEN, userId: 'dummy_token' });
    const topics = await api.getAllDeployedTopics();
    assert(Array.isArray(topics) && topics.includes('ConformanceDeployedTopic') && topics.includes('SampleExternalTask'),
      'deployed topics', topics);
    return topics;
  });

  await r.check('deployed start→end model runs to its end event', async () => {
    const res = await client.processModels.startProcessInstanceAndAwaitEndEvent({ processModelId: 'conformance_direct', initialToken: { a: 1 } });
    assertEqual(res.endEventId, 'EndEvent_1', 'endEventId');
    assertEqual(res.tokenPayload, { a: 1 }, 'tokenPayload');
  });

  await r.check('deployed external-task model is served to a worker', async () => {
    const worker = new engineClient.ExternalTaskWorker(client.getEngineUrl(), 'ConformanceDeployedTopic', async (p) => ({ got: p }),
      { workerId: 'conformance-deploy-worker', lockDuration: 10000, longpollingTimeout: 2000, idleTimeout: 50, logger: silentLogger });
    worker.start();
    try {
      const res = await client.processModels.startProcessInstanceAndAwaitEndEvent({ processModelId: 'conformance_external', initialToken: { b: 2 } });
      assertEqual(res.tokenPayload, { got: { b: 2 } }, 'tokenPayload');
    } finally {
      worker.dispose();
    }
  });
});
