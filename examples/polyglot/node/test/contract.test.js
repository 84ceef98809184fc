"use strict";
const test = require("node:test");
const assert = require("node:assert");
const c = require("../contract");
const { decide } = require("../approver");
const { handle } = require("../worker");

test("topic mapping", () => {
  assert.strictEqual(c.topicToken("SampleExternalTask"), "SampleExternalTask");
  assert.strictEqual(c.topicToken("billing.invoice created"), "billing%2Einvoice%20created");
  assert.strictEqual(c.topicToken("Prüfung"), "Pr%C3%BCfung");
});

test("approval rules", () => {
  assert.deepStrictEqual(decide({ amount: 999 }), { approved: true, autoApproved: true, reason: "amount below threshold" });
  assert.deepStrictEqual(decide({ amount: 5000, customerType: "vip" }), { approved: true, priority: "high", reason: "VIP customer" });
  assert.deepStrictEqual(decide({ current: { amount: 1000, customerType: "vip" } }), { approved: true, priority: "high", reason: "VIP customer" });
  assert.deepStrictEqual(decide({ amount: 1000 }), { approved: false, requiresReview: true, reason: "manual review required" });
  assert.deepStrictEqual(decide(null), { approved: false, requiresReview: true, reason: "manual review required" });
});

test("worker outcomes", () => {
  assert.deepStrictEqual(JSON.parse(handle({ payload: { a: 1 } })), { some: "result", echo: { a: 1 } });
  assert.strictEqual(JSON.parse(handle({ payload: { amount: -1 } })).$pe, "bpmn_error");
  assert.deepStrictEqual(JSON.parse(c.failure("x", 5000)), { $pe: "failure", message: "x", retryAfterMs: 5000 });
});
