// Package forwarder publishes the engine's notifications as CloudEvents on
// NATS: each notification name N (Config.Events, default DefaultEvents:
// user_task_waiting, user_task_finished, user_task_reserved,
// process_started, process_ended, process_error, process_terminated) that
// arrives is published on events.EventPrefix+N, e.g.
// pe.event.user_task_waiting.
//
// It receives the notifications from a Feed: SocketFeed, the engine's
// Socket.IO endpoint as the engine's own TypeScript client uses it
// (namespace "api", path "<engine url path>/socket.io", the engine token;
// github.com/zishang520/socket.io), or PollFeed, the REST long poll
// (GET /notifications/long_polling/N), a fallback that loses what happens
// between two polls. It publishes through a Watermill message.Publisher
// (NewPublisher: watermill-nats/v2 with the CloudEvents marshaler of
// package watermillce, built on events.Encode).
//
// It uses the engine only through Notifier (*engine.Client) and the
// Socket.IO endpoint, NATS only through Watermill and, for EnsureStream and
// Lease, nats.go's jetstream package. It must not import the task pump, the
// service, the handler SDK or cmd.
//
// # Event format
//
// Binary content mode of the CloudEvents NATS binding, like the task events:
//
//	ce-specversion      1.0
//	ce-id               see below
//	ce-type             events.EventType(N), e.g. io.pebridge.event.user_task_waiting.v1
//	ce-source           Config.Source (default "pe-bridge")
//	ce-subject          flowNodeInstanceId when the message has one, else processInstanceId
//	ce-time             when the bridge published it (RFC 3339)
//	ce-processinstanceid, ce-processmodelid, ce-correlationid, ce-flownodeinstanceid
//	                    the message's ids, each when present
//	Content-Type        application/json
//	Nats-Msg-Id         = ce-id (JetStream de-duplication)
//	body                the engine's EventMessage as JSON, as the engine sent it
//
// No other headers (none of Watermill's). ce-id is stable for events the
// engine emits at most once per instance: "<N>/<flowNodeInstanceId>" for
// user_task_waiting, user_task_finished and the other *_waiting/*_finished/
// activity_* flow node events, "<N>/<processInstanceId>" for
// process_started, process_ended, process_error and process_terminated,
// "external_task_created/<externalTaskId>". Events that can repeat for one
// instance (user_task_reserved, ...) get a random UUID.
//
// # Guarantees
//
// Over Socket.IO nothing is lost while the connection stands. When it drops,
// SocketFeed reconnects with jittered exponential backoff, and the
// forwarder publishes a gap event on pe.event.gap (GapCloudEvent, reason
// GapReconnect) before the events that follow, and calls Observer.Gap. A
// gap event (GapStart) also marks the start of forwarding, a lease
// takeover (GapTakeover) and a dropped publish (GapPublish).
//
// Publishes are retried (Config.PublishAttempts, same ce-id). With a
// JetStream publisher (NewPublisher(nc, true, ...)) and a stream on
// pe.event.> (EnsureStream) each event is stored at-least-once and, within
// the stream's duplicate window, once. With a Leader (Lease: a key in a
// JetStream KV bucket), only the lease holder of N replicas publishes, so
// each event is published once; when the holder dies another takes over
// within Lease TTL + TTL/3.
//
// # Topics on deploy
//
// With Config.OnDeploy, process_deployed and external_task_created for a
// topic not seen before call it (the bridge wires it to the pump's topic
// refresh).
package forwarder
