'use strict';
// Shared helpers for the conformance scripts. Each script drives the engine emulator with the
// official @5minds/processcube_engine_client and prints exactly one JSON line of the form
//   {"conformance":"<script>","ok":true|false,"checks":[{"name":…,"ok":…,"error":…,"details":…}]}
// to stdout, then exits 0 when every check passed and 1 otherwise. The Go test
// (../conformance_test.go) finds that line among anything else the client may log.

const engineClient = require('@5minds/processcube_engine_client');

const engineUrl = process.env.PE_ENGINE_URL;

const DUMMY_TOKEN = 'ZHVtbXlfdG9rZW4=';

// silentLogger replaces the client's pino logger (which writes to stdout) for workers.
const silentLogger = {
  trace() {}, debug() {}, info() {}, warn() {}, error() {}, flush() {},
  addToDefaultLogObject() {}, removeFromDefaultLogObject() {}, logForLevel() {},
};

class Runner {
  constructor(script) {
    this.script = script;
    this.checks = [];
    this.done = false;
    if (!engineUrl) {
      this.fail('setup', new Error('PE_ENGINE_URL is not set'));
      this.finish();
    }
    const timeoutMs = Number(process.env.PE_SCRIPT_TIMEOUT_MS || 40000);
    this.timer = setTimeout(() => {
      this.fail('timeout', new Error(`script did not finish within ${timeoutMs} ms`));
      this.finish();
    }, timeoutMs);
    this.client = new engineClient.EngineClient(engineUrl);
  }

  pass(name, details) {
    this.checks.push({ name, ok: true, details: details === undefined ? null : details });
  }

  fail(name, err, details) {
    this.checks.push({ name, ok: false, error: describeError(err), details: details === undefined ? null : details });
  }

  // check runs fn; a thrown error or a rejected promise fails the check, a returned value is kept as details.
  async check(name, fn) {
    try {
      const details = await fn();
      this.pass(name, details);
      return true;
    } catch (err) {
      this.fail(name, err);
      return false;
    }
  }

  finish() {
    if (this.done) {
      return;
    }
    this.done = true;
    clearTimeout(this.timer);
    const ok = this.checks.length > 0 && this.checks.every((c) => c.ok);
    process.stdout.write(JSON.stringify({ conformance: this.script, ok, checks: this.checks }) + '\n', () => {
      process.exit(ok ? 0 : 1);
    });
  }

  // run executes main, records an uncaught failure and always finishes.
  run(main) {
    Promise.resolve()
      .then(() => main(this))
      .catch((err) => this.fail('uncaught', err))
      .finally(() => this.finish());
  }
}

function describeError(err) {
  if (err == null) {
    return 'unknown error';
  }
  if (!(err instanceof Error) && typeof err !== 'object') {
    return String(err);
  }
  const parts = [];
  if (err.name) parts.push(err.name);
  if (err.code !== undefined) parts.push(`code=${err.code}`);
  parts.push(err.message || JSON.stringify(err));
  return parts.join(' ');
}

function assert(cond, message, details) {
  if (!cond) {
    const err = new Error(details === undefined ? message : `${message}: ${JSON.stringify(details)}`);
    err.name = 'AssertionError';
    throw err;
  }
}

// canonical is JSON with object keys sorted, so comparisons ignore key order.
function canonical(v) {
  return JSON.stringify(v, (_, x) => (x && typeof x === 'object' && !Array.isArray(x) && !(x instanceof Date)
    ? Object.fromEntries(Object.keys(x).sort().map((k) => [k, x[k]]))
    : x));
}

function assertEqual(actual, expected, what) {
  const a = canonical(actual);
  const e = canonical(expected);
  assert(a === e, `${what}: expected ${e}, got ${a}`);
}

// expectError runs fn and asserts it rejects with an error whose .code is the given status.
async function expectError(fn, code, what) {
  let err;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  assert(err !== undefined, `${what}: expected an error with code ${code}, call succeeded`);
  assert(err.code === code, `${what}: expected error code ${code}, got ${err.code} (${err.name}: ${err.message})`);
  return { code: err.code, name: err.name, message: err.message };
}

// waitFor polls fn until it returns a truthy value or the deadline passes.
async function waitFor(what, fn, timeoutMs = 10000, intervalMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) {
      return last;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(intervalMs);
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// rawRequest talks HTTP directly (for checks the client cannot express, e.g. a late finish).
async function rawRequest(method, path, body) {
  const res = await fetch(`${engineUrl}/atlas_engine/api/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${DUMMY_TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json };
}

async function queryInstances(client, ids) {
  const res = await client.processInstances.query({ processInstanceId: ids });
  return res.processInstances;
}

module.exports = {
  engineClient, engineUrl, DUMMY_TOKEN, silentLogger, Runner, assert, assertEqual, expectError, waitFor, sleep,
  rawRequest, queryInstances,
};
