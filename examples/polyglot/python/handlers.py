"""pe-bridge polyglot example for Python (nats-py, asyncio).

Two handlers against `bridge dev`:

* worker: serves the SampleExternalTask topic of the hello_world model (the
  seed's worker) and replies {"some": "result", "echo": <payload>};
* approver: lists the waiting user tasks of the approval model over
  pe.usertask.list and finishes each over pe.usertask.finish by the seed's
  rules; it looks when pe.event.user_task_waiting arrives and every few
  seconds (engine events are hints, not a log).

Run:  pip install -r requirements.txt && python3 handlers.py
      (NATS_URL, default nats://127.0.0.1:4222)

`python3 handlers.py --stdio task|decide` reads one task payload / user task
token as JSON on stdin and prints the reply body / the user task result: the
pure logic without NATS, used by the project's tests.
"""

import asyncio
import json
import os
import signal
import sys

TASK_PREFIX = "pe.task."
CANCEL_PREFIX = "pe.cancel."
QUEUE_GROUP = "pe-handlers"


def topic_token(topic: str) -> str:
    """Map an engine topic to its NATS subject token (docs/contract.md §2)."""
    safe = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
    return "".join(chr(b) if b in safe else "%%%02X" % b for b in topic.encode("utf-8"))


# Reply bodies of wire contract v1: plain JSON is success, "$pe" envelopes are
# BPMN errors and technical failures.
def success(result) -> bytes:
    return b"" if result is None else json.dumps(result).encode()


def bpmn_error(code: str, message: str = "", details=None) -> bytes:
    return json.dumps({"$pe": "bpmn_error", "code": code, "message": message, "details": details}).encode()


def failure(message: str, retry_after_ms: int = 0) -> bytes:
    body = {"$pe": "failure", "message": message}
    if retry_after_ms:
        body["retryAfterMs"] = retry_after_ms
    return json.dumps(body).encode()


def handle_task(payload) -> bytes:
    """The seed's handler: gets the payload, returns the result."""
    if isinstance(payload, dict) and isinstance(payload.get("amount"), (int, float)) and payload["amount"] < 0:
        return bpmn_error("invalid_amount", "amount must not be negative", {"amount": payload["amount"]})
    return success({"some": "result", "echo": payload})


def decide(token) -> dict:
    """The seed's approval rules on the token the user task was entered with."""
    t = token if isinstance(token, dict) else {}
    if "amount" not in t and isinstance(t.get("current"), dict):
        t = t["current"]
    amount = t.get("amount")
    if isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount < 1000:
        return {"approved": True, "autoApproved": True, "reason": "amount below threshold"}
    if t.get("customerType") == "vip":
        return {"approved": True, "priority": "high", "reason": "VIP customer"}
    return {"approved": False, "requiresReview": True, "reason": "manual review required"}


def parse_task(msg):
    """Task metadata and payload of a task event, binary or structured mode."""
    headers = msg.headers or {}
    text = msg.data.decode() if msg.data else ""
    if headers.get("Content-Type", "").startswith("application/cloudevents+json"):
        ev = json.loads(text)
        return {"id": ev.get("id"), "processInstanceId": ev.get("processinstanceid")}, ev.get("data")
    meta = {"id": headers.get("ce-id"), "processInstanceId": headers.get("ce-processinstanceid")}
    return meta, (json.loads(text) if text.strip() else None)


async def run_worker(nc, topic="SampleExternalTask"):
    token = topic_token(topic)

    async def on_task(msg):
        try:
            meta, payload = parse_task(msg)
            print(f"worker: task {meta['id']} of process {meta['processInstanceId']}: payload {json.dumps(payload)}", flush=True)
            body = handle_task(payload)
        except Exception as err:  # a technical failure: the bridge retries
            body = failure(f"python worker: {err}", 1000)
        await msg.respond(body)

    async def on_cancel(msg):
        print(f"worker: task {(msg.headers or {}).get('ce-id')} cancelled by the engine", flush=True)

    await nc.subscribe(CANCEL_PREFIX + token, cb=on_cancel)  # no queue group
    await nc.subscribe(TASK_PREFIX + token, queue=QUEUE_GROUP, cb=on_task)
    print(f"worker: serving topic {topic}", flush=True)


async def call(nc, subject, body):
    msg = await nc.request(subject, json.dumps(body).encode(), timeout=30)
    headers = msg.headers or {}
    if headers.get("Nats-Service-Error-Code"):
        raise RuntimeError(f"{subject}: error {headers['Nats-Service-Error-Code']}: {headers.get('Nats-Service-Error')}")
    return json.loads(msg.data) if msg.data else None


async def approve_waiting(nc, model):
    listing = await call(nc, "pe.usertask.list", {"processModelId": model, "state": "suspended"})
    for ut in listing.get("userTasks", []):
        result = decide(ut.get("token"))
        try:
            await call(nc, "pe.usertask.finish", {"userTaskInstanceId": ut["userTaskInstanceId"], "result": result})
            print(f"approver: finished user task {ut['userTaskInstanceId']} ({ut.get('flowNodeId')}): {json.dumps(result)}", flush=True)
        except Exception as err:
            print(f"approver: finishing {ut['userTaskInstanceId']}: {err}", flush=True)


async def run_approver(nc, stop: asyncio.Event, model="approval", poll=2.0):
    wake = asyncio.Event()

    async def on_waiting(_msg):
        wake.set()

    sub = await nc.subscribe("pe.event.user_task_waiting", cb=on_waiting)
    print(f"approver: finishing waiting user tasks of {model}", flush=True)
    while not stop.is_set():
        try:
            await approve_waiting(nc, model)
        except Exception as err:
            print(f"approver: {err}", flush=True)
        wake.clear()
        waiters = [asyncio.create_task(wake.wait()), asyncio.create_task(stop.wait())]
        await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
    await sub.unsubscribe()


async def main():
    import nats  # nats-py: pip install -r requirements.txt

    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"), name="pe-bridge-example-python",
                            max_reconnect_attempts=-1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_worker(nc)
    await run_approver(nc, stop)
    await nc.drain()


def stdio(mode: str):
    data = sys.stdin.read()
    value = json.loads(data) if data.strip() else None
    if mode == "task":
        sys.stdout.write(handle_task(value).decode())
    elif mode == "decide":
        sys.stdout.write(json.dumps(decide(value)))
    else:
        raise SystemExit(f"unknown --stdio mode {mode!r} (task or decide)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--stdio":
        stdio(sys.argv[2])
    else:
        asyncio.run(main())
