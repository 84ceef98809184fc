// The parts of pe-bridge's wire contract v1 (docs/contract.md) a handler
// needs, written out for plain JavaScript: no SDK, just the nats client.
"use strict";

const TASK_PREFIX = "pe.task.";
const CANCEL_PREFIX = "pe.cancel.";
const QUEUE_GROUP = "pe-handlers";

// topicToken maps an engine topic to its NATS subject token: A-Z a-z 0-9 _ -
// stay, every other byte becomes %XX (upper-case hex).
function topicToken(topic) {
  let out = "";
  for (const b of Buffer.from(topic, "utf8")) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9_-]/.test(c) ? c : "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

// Reply bodies: plain JSON is success; "$pe" envelopes are BPMN errors and
// technical failures.
const success = (result) => (result === undefined || result === null ? "" : JSON.stringify(result));
const bpmnError = (code, message, details) =>
  JSON.stringify({ $pe: "bpmn_error", code, message, details });
const failure = (message, retryAfterMs) =>
  JSON.stringify(retryAfterMs ? { $pe: "failure", message, retryAfterMs } : { $pe: "failure", message });

// parseTask reads a task event in binary mode (ce-* headers, payload body) or
// structured mode (Content-Type application/cloudevents+json).
function parseTask(msg) {
  const h = msg.headers;
  const get = (k) => (h ? h.get(k) : "");
  const text = new TextDecoder().decode(msg.data);
  if ((get("Content-Type") || "").startsWith("application/cloudevents+json")) {
    const ev = JSON.parse(text);
    return {
      id: ev.id, topic: ev.topic || ev.subject, processInstanceId: ev.processinstanceid,
      processModelId: ev.processmodelid, correlationId: ev.correlationid, payload: ev.data ?? null,
    };
  }
  return {
    id: get("ce-id"), topic: get("ce-topic") || get("ce-subject"), processInstanceId: get("ce-processinstanceid"),
    processModelId: get("ce-processmodelid"), correlationId: get("ce-correlationid"),
    payload: text.trim() === "" ? null : JSON.parse(text),
  };
}

// connectFromEnv connects to NATS_URL (default nats://127.0.0.1:4222) and
// drains the connection on SIGINT/SIGTERM; onStop runs first.
async function connectFromEnv(name, onStop = () => {}) {
  const { connect } = require("nats");
  const servers = process.env.NATS_URL || "nats://127.0.0.1:4222";
  const nc = await connect({ servers, name, maxReconnectAttempts: -1 });
  console.log(`connected to ${nc.getServer()}`);
  const shutdown = () => {
    onStop();
    nc.drain().catch(() => {});
  };
  process.once("SIGINT", shutdown);
  process.once("SIGTERM", shutdown);
  return nc;
}

// main runs fn and exits non-zero on an error.
function main(fn) {
  fn().catch((err) => {
    console.error(`example: ${err.message}`);
    process.exit(1);
  });
}

module.exports = {
  TASK_PREFIX, CANCEL_PREFIX, QUEUE_GROUP, topicToken, success, bpmnError, failure, parseTask, connectFromEnv, main,
};
