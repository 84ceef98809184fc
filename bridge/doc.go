// Package bridge is pe-bridge's hub. This file set owns the external task
// pump (engine → CloudEvent on NATS → handler reply → finish / error); the
// request/reply services and the event forwarder live in the sub-packages
// service and forwarder.
//
// It imports events (the wire contract and the one CloudEvents codec),
// engine (wire types and error sentinels only, through the consumer-owned
// interfaces Fetcher, Locker, Reporter and TopicSource, which *engine.Client
// satisfies) and nats.go (tests also use sdk-go to check spec compliance). It must not import cmd/..., the handler SDK
// or the engine emulator (tests may use the emulator).
//
// # Wiring (cmd/bridge)
//
//	eng := engine.NewClient(url, engine.ClientConfig{...}) // its HTTP timeout must exceed LongPollTimeout
//	nc, _ := nats.Connect(natsURL, nats.MaxReconnects(-1)) // reconnect forever: the pump keeps running
//	pump, err := bridge.NewPump(eng, nc, bridge.Config{Source: "pe-bridge://" + engineHost}, logger)
//	...
//	err = pump.Run(ctx) // in an errgroup; returns nil after the drain once ctx is cancelled
//	nc.Drain()          // after Run returned: the pump does not own nc
//
// Config zero values are the documented defaults (Config.Validate is called
// by NewPump). Run blocks; cancel its context (or call Close) to stop. Stats
// returns counters for a status page or `bridge dev` output. Run is meant to
// be called once per Pump. The pump never closes nc; make sure the nats.Conn
// reconnects (nats.MaxReconnects(-1)) so a restarted nats-server loses nothing.
//
// # What a task goes through
//
// One poller per topic (every deployed topic, re-read each TopicRefresh and
// at once after RefreshTopics, or Config.Topics) long-polls fetch_and_lock
// with maxTasks = the free slots of the topic's window: Window tasks per
// topic that handlers work on (from fetch until the handler's outcome is
// in); a full window refills once a quarter of it is free. Tasks whose
// outcome is still being reported to the engine leave the window but are
// capped at another Window per topic, so a slow engine stops the fetching
// too. Each fetch is bounded by LongPollTimeout plus a small margin; on a
// busy topic (a fetch brought tasks within the last long poll) a fetch open
// for more than LongPollTimeout/20 (at most 500 ms) is taken as stalled and
// another one starts beside it (at most 64 open per topic, one not given
// up on, the others run to their bound; should a given-up fetch still
// answer, its tasks are taken too and the window briefly holds more; an
// idle topic keeps one long poll). Engine errors back the poller off
// exponentially with jitter (RetryBackoff … MaxRetryBackoff). Discovered is
// closed after the first topic discovery (at once with Config.Topics).
//
// Each task is published as a CloudEvent on events.TaskSubject(topic): id =
// external task id (the same on every re-delivery, so handlers de-duplicate),
// type events.TypeTask, source Config.Source, subject = topic, time,
// datacontenttype application/json, data = the task payload, and the
// extensions topic, processinstanceid, processmodelid, correlationid,
// flownodeinstanceid, lockexpiresat (RFC 3339), singletry and a W3C
// traceparent (one trace id per task, a new span id per publication). The
// event is encoded by events.Encode, the one CloudEvents codec of the
// project (binary mode: "ce-<attr>" headers, datacontenttype as
// Content-Type, payload as body; structured mode, per topic with
// ContentModeByTopic: the JSON event format, Content-Type
// application/cloudevents+json); a test reads the pump's output with
// sdk-go's binding machinery in both modes. With Config.Tracer, each
// attempt's traceparent comes from TaskSpan.Publish.
//
// The reply subject is "<inbox>.<key>": <inbox> is nc.NewInbox() (a nuid
// with a crypto-random prefix, under the connection's inbox prefix, so
// custom prefixes and permissions work) plus 8 random characters, and <key>
// is 128 bits from crypto/rand (rand.Text) per attempt, so a client that saw
// any number of task events cannot name the reply subject of another. All
// replies arrive on ONE wildcard subscription "<inbox>.>". A reply to an
// attempt that is no longer current (a retried, cancelled, timed-out or
// finished task) is dropped as late; one to a key never issued is counted
// (PumpStats.UnknownReplies) and dropped.
//
// Replies are decoded with events.DecodeReply (body marker "$pe", matched
// exactly, or header Pe-Outcome, matched in any case): a body without "$pe"
// is a success whose result is the body verbatim; BPMN error → error with
// code, message and details; a failure, a malformed reply (not JSON, over
// MaxReplyBytes, unknown marker) or no reply within HandlerTimeout → a
// technical failure: the task is published again after RetryBackoff (or the
// handler's retryAfterMs), up to MaxAttempts attempts, then reported once
// with FailureErrorCode (default "TechnicalFailure") and a message naming
// the cause. Each failure is logged with task_id, topic, ce_id and reason.
// A task whose event is above the server's max_payload is reported once the
// same way, with a message naming its size and the limit.
//
// # Life cycle
//
// Each task is a state machine (lifecycle.go): states new, awaiting,
// backoff, reporting, report_wait and done; events deliver, invalid,
// outcome, failed, no_responders, too_large, reconnected, retry_due,
// deadline, report_done, report_refused, report_failed, report_due, gone,
// lock_lost, refetched, abandon and cut_off. transition is the only place a
// state changes; the table is in its doc comment and TestTransitionTable
// checks every (state, event) pair, impossible ones are rejected (counted in
// PumpStats.Rejected and logged). A task the engine hands out again while the
// pump holds it keeps its running attempt and adopts the new lock (no second
// publication). After a NATS reconnect every awaited attempt is published
// again (same ce-id, new key) after one second: replies sent while the
// connection was down are lost.
//
// Locks follow lockPolicy (lockpolicy.go): the first extend_lock of a lock
// starts when two thirds of it are left; each call is bounded by the time
// the lock has left; while no call of the cycle succeeded, another starts
// every LockDuration/10 (up to 8 open), so a stalled or slow call never
// leaves the lock unattended; extension goes on until the outcome is
// reported or MaxProcessingTime (per topic: MaxProcessingTimeByTopic) has
// passed since the fetch. Finish/error calls are bounded by LockDuration/15
// (at least 1 s), the same for the first retry (at once after a timeout),
// then doubling per retry up to LockDuration. 409 on extend means the engine
// closed the task (boundary event, termination): the pump stops, publishes
// a events.TypeTaskCancelled event (id = task id, extension "reason") on
// events.CancelSubject(topic) and drops any late reply. 423/404 on extend:
// the lock is lost (another worker owns the task, or it is gone); dropped
// with a warning, and the same cancel event (reason "lock lost: ...") tells
// the handler to stop. At MaxProcessingTime a single-try task is reported
// with FailureErrorCode; a multi-try task is left to lapse (the engine
// offers it again). Temporary engine errors in these retry loops are logged
// at Debug (the engine client logs an outage once).
//
// Engine calls are bounded: at most Config.ReportConcurrency finish/error
// calls are open at once (default 64); further outcomes wait in a FIFO queue
// that holds neither a goroutine nor a connection, and a fixed number of
// reporter goroutines works through it. Lock extensions have a bound of
// their own (Config.ExtendConcurrency, default 64), so a queue of outcomes
// never delays an extension (and queued tasks keep their locks extended).
// The long polls (one per topic) are not bounded. The drain's final reports
// use their own context and a bound of ReportConcurrency of their own. Give
// the engine client at least ReportConcurrency + ExtendConcurrency + topics
// idle connections (engine.ClientConfig.MaxIdleConnsPerHost; cmd/bridge does).
//
// Finish and error calls: 409/423/404 → dropped with a warning (already done,
// owned by another worker, gone); 5xx, 429 and transport errors → retried with
// backoff while the lock is still extended; other 4xx → dropped with an
// error log. Once an outcome call got a definitive answer nothing more is
// sent for it, so a task is never finished twice by this pump.
//
// # No responders
//
// nats-server answers a publication with a reply subject that no subscriber
// receives with a status-503 message on the reply subject; the pump sees it
// on its inbox. It then does not keep the task locked for nothing: a
// multi-try task stops extending at once (the lock lapses and the engine
// offers it again later), and the topic pauses for NoResponderBackoff,
// doubling up to MaxNoResponderBackoff while canaries keep finding nobody; a
// paused topic fetches one task at a time (a canary) until a handler
// answers, then it resumes with its full window. A single-try task keeps its
// lock and is published again with the same backoff until MaxProcessingTime,
// then it is reported with FailureErrorCode. A publish error (connection
// closed, reconnect buffer full) is treated like no responders.
//
// # Shutdown
//
// When Run's context is cancelled no fetch starts; the fetches that are
// open are not cut off (the engine may have locked tasks whose answer is on
// the way) but waited for, at most LongPollTimeout plus its margin, and their
// tasks are delivered and drained like the others. Locks of in-flight tasks
// keep being extended and replies handled for up to DrainTimeout (Run
// returns as soon as none are left); then still-open single-try tasks are
// reported with FailureErrorCode "pe-bridge: bridge shutting down",
// multi-try tasks are left to lapse, and the outcomes queued or being
// reported get up to 10 s more before the engine calls are cut off; one
// summary line with the counts is logged.
//
// Bad input from the engine (a task whose topic cannot be mapped, a payload
// that is not JSON) is logged with its task_id and reported at once with
// FailureErrorCode; it never stops the pump.
//
// # Known limits
//
//   - Stopping waits for the open long poll (up to LongPollTimeout plus its
//     margin, 12.5 s by default) even when the topic is idle.
//   - Delivery is at-least-once: a task whose lock lapsed (no responders,
//     shutdown, lost connection) is offered again with the same CloudEvent id.
//   - A task id that is blank is not deliverable: it is logged and lapses.
//   - With Config.Topics empty the pump serves every deployed topic. A topic
//     nobody listens to on NATS is paused, but each canary still locks one
//     task for LockDuration: when other (non-NATS) workers serve some topics,
//     list the bridge's topics in Config.Topics.
//   - 409 on finish/error is taken as "already done" even when it was an
//     earlier attempt of ours whose answer got lost; the task counts as dropped.
//
// # Why nats.go directly and not Watermill for the task flow
//
// DESIGN.md suggests Watermill message.Publisher/Subscriber for the task
// flow. We evaluated watermill-nats/v2 (pkg/nats) and use nats.go directly
// because the pump's correctness rests on things Watermill's abstraction
// hides: (1) per-message reply subjects: the outcome protocol is NATS
// request/reply, handlers answer with their client's respond(), and the
// no-responders signal (a 503 status on the reply subject) exists only for
// messages with a reply subject. Watermill's message model has no reply
// field; a custom Marshaler could smuggle one from metadata into the
// nats.Msg, but then Watermill is only a detour around nc.PublishMsg, and the
// replies still need a core-NATS wildcard subscription that Watermill's
// subscriber (topic + ack semantics) does not model. (2) Message identity:
// Watermill gives every message a UUID and adds its own metadata headers;
// the contract wants the CloudEvent id = the external task id and clean ce-*
// headers that any NATS client reads. (3) Its subscriber runs an ack/nack
// model with a goroutine and an ack wait per message; our replies need
// neither, and one wildcard subscription with a map lookup keeps the hot
// path allocation-light (throughput target: ≥70 % of a direct REST worker).
// (4) Publisher.Close closes the NATS connection it was given, which the pump
// shares with the services. Watermill remains a fit for fire-and-forget
// fan-out (the event forwarder) where none of this matters.
package bridge
