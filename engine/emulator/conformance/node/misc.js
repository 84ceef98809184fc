'use strict';
// Application info, process model list/get, message and signal triggering, process instance and event
// queries, through the official client. Message/signal models come from ../testdata/scenario.bpmn
// (deployed with deployFiles) and examples/models (loaded by the Go test).
const path = require('path');
const { Runner, assert, assertEqual, expectError, waitFor, queryInstances } = require('./lib');

const SCENARIO = path.join(__dirname, '..', 'testdata', 'scenario.bpmn');

new Runner('misc').run(async (r) => {
  const client = r.client;

  await r.check('application info', async () => {
    const info = await client.applicationInfo.getApplicationInfo();
    for (const f of ['name', 'packageName', 'version', 'authorityUrl']) {
      assert(typeof info[f] === 'string' && info[f] !== '', `${f} missing`, info);
    }
    assertEqual(info.allowAnonymousRootAccess, true, 'allowAnonymousRootAccess');
    assert(Array.isArray(info.loadedExtensions), 'loadedExtensions not an array', info);
    return info;
  });

  await r.check('authority', async () => {
    const a = await client.applicationInfo.getAuthorityAddress();
    assert(typeof a === 'string' && /^https?:\/\//.test(a), 'authority is not a URL string', a);
    return a;
  });

  await r.check('deploy scenario models', async () => {
    await client.processDefinitions.deployFiles(SCENARIO, { overwriteExisting: true });
  });

  await r.check('process models list and get', async () => {
    const all = await client.processModels.getAll();
    const ids = all.processModels.map((m) => m.processModelId);
    for (const want of ['hello_world', 'conf_message', 'conf_signal', 'conf_direct']) {
      assert(ids.includes(want), `${want} missing from getAll`, ids);
    }
    assertEqual(all.totalCount, ids.length, 'totalCount');
    const page = await client.processModels.getAll({ offset: 1, limit: 2 });
    assertEqual(page.processModels.length, 2, 'page size with offset 1 limit 2');
    assertEqual(page.processModels.map((m) => m.processModelId), ids.slice(1, 3), 'page content');
    assertEqual(page.totalCount, all.totalCount, 'totalCount of a page');
    const hw = await client.processModels.getById('hello_world');
    assertEqual(hw.processModelId, 'hello_world', 'processModelId');
    assertEqual(hw.isExecutable, true, 'isExecutable');
    assert(typeof hw.processDefinitionId === 'string' && hw.processDefinitionId !== '', 'processDefinitionId', hw);
    assertEqual(hw.startEvents.map((e) => e.id), ['the_start_event'], 'startEvents');
    assertEqual(hw.endEvents.map((e) => e.id), ['the_end_event'], 'endEvents');
    const types = hw.flowNodes.map((f) => f.flowNodeType);
    assert(types.includes('bpmn:ServiceTask'), 'no bpmn:ServiceTask among flowNodes', types);
    for (const f of hw.flowNodes) {
      assert(typeof f.id === 'string' && f.processModelId === 'hello_world', 'flow node view model', f);
    }
    await expectError(() => client.processModels.getById('conformance_no_such_model'), 404, 'unknown model');
    return ids;
  });

  await r.check('message trigger', async () => {
    const { processInstanceId: pid } = await client.processModels.startProcessInstance({ processModelId: 'conf_message', initialToken: { m: 0 } });
    await waitFor('message catch event waiting', async () => {
      const res = await client.events.query({ processInstanceId: pid });
      return res.events.some((e) => e.flowNodeId === 'conf_message_catch' && e.state === 'suspended');
    }, 5000);
    // Without the instance filter a message for another instance must not leak in: trigger a different name first.
    await client.events.triggerMessageEvent('conf_message_other', { payload: { ignored: true } });
    await client.events.triggerMessageEvent('conf_message', { processInstanceId: pid, payload: { m: 1 } });
    await waitFor('message instance finished', async () => (await queryInstances(client, [pid]))[0]?.state === 'finished', 5000);
    const [pi] = await queryInstances(client, [pid]);
    assertEqual(pi.endEventId, 'conf_message_end', 'endEventId');
    return { endToken: pi.endToken };
  });

  await r.check('signal trigger', async () => {
    const a = await client.processModels.startProcessInstance({ processModelId: 'conf_signal', initialToken: { s: 'a' } });
    const b = await client.processModels.startProcessInstance({ processModelId: 'conf_signal', initialToken: { s: 'b' } });
    await waitFor('both signal catch events waiting', async () => {
      const res = await client.events.query({ processInstanceId: [a.processInstanceId, b.processInstanceId] });
      return res.events.filter((e) => e.flowNodeId === 'conf_signal_catch' && e.state === 'suspended').length === 2;
    }, 5000);
    await client.events.triggerSignalEvent('conf_signal', { payload: { s: 'go' } });
    await waitFor('signal instances finished', async () => {
      const pis = await queryInstances(client, [a.processInstanceId, b.processInstanceId]);
      return pis.length === 2 && pis.every((pi) => pi.state === 'finished');
    }, 5000);
  });

  await r.check('example models message_catch and signal_catch', async () => {
    const m = await client.processModels.startProcessInstance({ processModelId: 'message_catch', initialToken: { n: 1 } });
    const s = await client.processModels.startProcessInstance({ processModelId: 'signal_catch', initialToken: { n: 2 } });
    await waitFor('both catch events waiting', async () => {
      const res = await client.events.query({ processInstanceId: [m.processInstanceId, s.processInstanceId] });
      const ids = res.events.filter((e) => e.state === 'suspended').map((e) => e.flowNodeId).sort();
      return ids.join() === 'wait_for_approval,wait_for_go';
    }, 5000);
    await client.events.triggerMessageEvent('approval_received', { processInstanceId: m.processInstanceId, payload: { approved: true } });
    await client.events.triggerSignalEvent('go', {});
    await waitFor('both finished', async () => {
      const pis = await queryInstances(client, [m.processInstanceId, s.processInstanceId]);
      return pis.length === 2 && pis.every((pi) => pi.state === 'finished');
    }, 5000);
    const pis = await queryInstances(client, [m.processInstanceId, s.processInstanceId]);
    assertEqual(pis.map((p) => p.endEventId).sort(), ['mc_end', 'sc_end'], 'end events');
  });

  await r.check('error end event rejects the awaiting start with a BpmnError', async () => {
    let err;
    try {
      await client.processModels.startProcessInstanceAndAwaitEndEvent({ processModelId: 'conf_error_end' });
    } catch (e) {
      err = e;
    }
    assert(err !== undefined, 'start of an instance ending at an error end event succeeded');
    assertEqual({ cls: err.constructor.name, name: err.name, code: err.code }, { cls: 'BpmnError', name: 'ConformanceError', code: 'conf_code' }, 'BpmnError');
    return { message: err.message };
  });

  await r.check('process instance query filters', async () => {
    const corr = `conformance-misc-${Date.now()}`;
    const started = [];
    for (let i = 0; i < 3; i++) {
      started.push(await client.processModels.startProcessInstanceAndAwaitEndEvent({ processModelId: 'conf_direct', correlationId: corr, initialToken: { i } }));
    }
    const byCorr = await client.processInstances.query({ correlationId: corr });
    assertEqual(byCorr.totalCount, 3, 'totalCount by correlationId');
    assert(byCorr.processInstances.every((pi) => pi.correlationId === corr && pi.processModelId === 'conf_direct'), 'filter by correlationId', byCorr);
    const finished = await client.processInstances.query({ correlationId: corr, state: 'finished' });
    assertEqual(finished.totalCount, 3, 'totalCount by correlationId+state');
    const running = await client.processInstances.query({ correlationId: corr, state: 'running' });
    assertEqual(running.totalCount, 0, 'running instances of a finished correlation');
    const paged = await client.processInstances.query({ correlationId: corr }, { offset: 1, limit: 1 });
    assertEqual(paged.processInstances.length, 1, 'page size');
    assertEqual(paged.totalCount, 3, 'totalCount of a page');
    const two = await client.processInstances.query({ processInstanceId: [started[0].processInstanceId, started[2].processInstanceId] });
    assertEqual(two.processInstances.map((p) => p.processInstanceId).sort(),
      [started[0].processInstanceId, started[2].processInstanceId].sort(), 'comma-separated processInstanceId list');
    const pi = two.processInstances[0];
    assert(pi.createdAt instanceof Date && !isNaN(pi.createdAt), 'createdAt', pi);
    assert(typeof pi.ownerId === 'string' && pi.ownerId !== '', 'ownerId', pi);
    assert(typeof pi.processDefinitionId === 'string' && pi.processDefinitionId !== '', 'processDefinitionId', pi);
    return { totalCount: byCorr.totalCount };
  });

  await r.check('events query', async () => {
    const { processInstanceId: pid } = await client.processModels.startProcessInstance({ processModelId: 'conf_message' });
    const res = await waitFor('event listed', async () => {
      const q = await client.events.query({ processInstanceId: pid });
      return q.events.length > 0 && q;
    }, 5000);
    const ev = res.events.find((e) => e.flowNodeId === 'conf_message_catch');
    assert(ev, 'catch event not listed', res.events);
    assertEqual(ev.flowNodeType, 'bpmn:IntermediateCatchEvent', 'flowNodeType');
    assertEqual(ev.eventType, 'messageEvent', 'eventType');
    await client.processInstances.terminateProcessInstance(pid);
    return { totalCount: res.totalCount };
  });
});
