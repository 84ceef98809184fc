// Package forwarder publishes the engine's notifications as CloudEvents on
// NATS: each notification name N (Config.Events, default DefaultEvents:
// user_task_waiting, user_task_finished, user_task_reserved,
// process_started, process_ended, process_error, process_terminated) is
// long-polled in its own loop (GET /notifications/long_polling/N) and every
// message that arrives is published on events.EventPrefix+N, e.g.
// pe.event.user_task_waiting.
//
// It owns the encoding of engine events; it uses the engine only through
// Notifier (satisfied by *engine.Client) and NATS only through Publisher
// (*nats.Conn). It must not import the task pump, the service, the handler
// SDK or cmd.
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
//	body                the engine's EventMessage as JSON (processInstanceId, processModelId,
//	                    correlationId, flowNodeId, flowNodeInstanceId, currentToken,
//	                    userTaskResult, ...)
//
// ce-id is stable for events the engine emits at most once per instance:
// "<N>/<flowNodeInstanceId>" for user_task_waiting, user_task_finished and
// the other *_waiting/*_finished/activity_* flow node events,
// "<N>/<processInstanceId>" for process_started, process_ended,
// process_error and process_terminated. Several bridges polling the same
// engine each publish every event, so consumers (or a JetStream stream,
// through Nats-Msg-Id) should de-duplicate on ce-id. Events that can repeat
// for one instance (user_task_reserved, ...) get a random UUID.
//
// # Delivery guarantee: hints, not a log
//
// The engine's long-polling endpoint returns the next event that happens
// while a poll is open; it keeps no cursor. Events that happen between two
// polls of one name (while the bridge publishes the previous one, while it
// backs off after an engine error, or while it is down) are lost, and a core
// NATS publish reaches only subscribers connected at that moment. Treat the
// events as wake-up hints and reconcile with queries (pe.usertask.list,
// pe.process.query): e.g. on start and periodically list the waiting user
// tasks instead of relying on user_task_waiting alone.
//
// On an engine error a loop waits with jittered exponential backoff
// (Config.MinBackoff doubling up to Config.MaxBackoff) and polls again; a
// poll longer than Config.PollTimeout is re-issued. Run's cancellation or
// Close cancels every poll at once.
package forwarder
