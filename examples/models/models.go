// Package models embeds the sample BPMN models that `bridge dev` deploys into
// the engine emulator and that the tests use. See README.md for what each
// model exercises.
package models

import "embed"

// FS holds every *.bpmn file of this directory.
//
//go:embed *.bpmn
var FS embed.FS

// Late is a model that is not in FS, so `bridge dev` does not deploy it:
// process "late" with one external task of topic "LateTopic". Tests deploy it
// after the bridge started, to see the bridge serve a topic it did not know.
const Late = `<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="Definitions_late" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="late" isExecutable="true">
    <bpmn:startEvent id="S"><bpmn:outgoing>F1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:sequenceFlow id="F1" sourceRef="S" targetRef="T" />
    <bpmn:serviceTask id="T" camunda:type="external" camunda:topic="LateTopic"><bpmn:incoming>F1</bpmn:incoming><bpmn:outgoing>F2</bpmn:outgoing></bpmn:serviceTask>
    <bpmn:sequenceFlow id="F2" sourceRef="T" targetRef="E" />
    <bpmn:endEvent id="E"><bpmn:incoming>F2</bpmn:incoming></bpmn:endEvent>
  </bpmn:process>
</bpmn:definitions>`
