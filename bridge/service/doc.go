// Package service is pe-bridge's request/reply API: one NATS micro service
// (name "pe-bridge", see events.ServiceName) that starts processes, works
// user tasks and triggers messages and signals on the engine, so any NATS
// client (or `nats req`) can do what the Python/TypeScript engine clients do.
//
// It owns the endpoint subjects' request and reply shapes and the mapping of
// engine errors to service errors. It talks to the engine only through the
// small interfaces in engine.go (satisfied by *engine.Client) and must not
// import the task pump, the forwarder, the handler SDK or cmd.
//
// # Endpoints
//
// All endpoints share the queue group Config.QueueGroup (default
// "pe-bridge"), so several bridges split the load. Requests and replies are
// JSON objects with camelCase members named as the engine names them. An
// empty request body counts as {}. Unknown members are refused (400 naming
// the member) so a typo never passes silently.
//
// Subject (micro endpoint name): request → reply
//
//	pe.process.start (process_start)
//	  {"processModelId":"hello_world",     required
//	   "startEventId":"the_start_event",   optional; needed when the model has several
//	   "correlationId":"c-1",              optional; default a new UUID
//	   "initialToken":{...},               optional; any JSON, the start token
//	   "returnOn":"created",               "created" (default) | "finished" | "end_event" | 1 | 2 | 3
//	   "endEventId":"the_end_event",       required with "end_event", refused otherwise
//	   "timeout":"30s"}                    optional; duration string or milliseconds;
//	                                       default 60s for blocking starts (Config.StartTimeout),
//	                                       Config.RequestTimeout otherwise; at most Config.MaxStartTimeout
//	  → {"processInstanceId":"...","correlationId":"c-1"}
//	    blocking starts ("finished", "end_event") add
//	    "endEventId":"the_end_event","tokenPayload":<final token, null when empty>
//
//	pe.process.terminate (process_terminate)
//	  {"processInstanceId":"..."} → {"processInstanceId":"..."}
//
//	pe.process.get (process_get)
//	  {"processInstanceId":"..."} → one engine ProcessInstance:
//	  {"processInstanceId","correlationId","processDefinitionId","processModelId",
//	   "processModelName","parentProcessInstanceId","hash","state","error","ownerId",
//	   "startedByRootAccessToken","createdAt","finishedAt","terminatedByUserId",
//	   "startEventId","startToken","endEventId","endToken"}
//
//	pe.process.query (process_query)
//	  {"processModelId","processInstanceId","correlationId",
//	   "state":"running"|"finished"|"error"|"terminated","offset":0,"limit":0}   all optional
//	  → {"processInstances":[ProcessInstance...],"totalCount":n}
//
//	pe.usertask.list (usertask_list)
//	  {"processModelId","processInstanceId","correlationId","flowNodeId",   all optional
//	   "state":"suspended",     default "suspended" (waiting); running|finished|terminated|error|canceled|any
//	   "actualOwnerId":"u1",    only tasks reserved by u1 (filtered by the bridge, then paged)
//	   "offset":0,"limit":0}    limit 0 = no limit
//	  → {"userTasks":[UserTask...],"totalCount":n}
//	  UserTask:
//	  {"userTaskInstanceId":"...",   the engine's flowNodeInstanceId; the id for get/reserve/finish
//	   "flowNodeId","flowNodeName","flowNodeLane","processModelId","processInstanceId",
//	   "correlationId","state",
//	   "token":{...},                the token the task was entered with (the form's input)
//	   "formFields":[{"id","label","type","defaultValue","customForm","parsedCustomForm",
//	                  "enumValues":[{"id","name"}]}],   [] when none
//	   "description","actualOwnerId","assignedUserIds","finishedByUserId",
//	   "result":{...},               the token after finishing (engine endToken)
//	   "startedAt","finishedAt"}     members without a value are left out
//
//	pe.usertask.get (usertask_get)
//	  {"userTaskInstanceId":"..."} → UserTask (any state)
//
//	pe.usertask.reserve (usertask_reserve)
//	  {"userTaskInstanceId":"...","actualOwnerId":"u1"} → the same object
//
//	pe.usertask.cancel_reservation (usertask_cancel_reservation)
//	  {"userTaskInstanceId":"..."} → {"userTaskInstanceId":"..."}
//
//	pe.usertask.finish (usertask_finish)
//	  {"userTaskInstanceId":"...","result":{"approved":true}}   result optional, a JSON object
//	  → {"userTaskInstanceId":"..."}
//
//	pe.message.trigger (message_trigger), pe.signal.trigger (signal_trigger)
//	  {"name":"catch_message","payload":<any JSON, optional>,"processInstanceId":"optional"}
//	  → {"name":"catch_message","processInstanceId":"..."}
//
// # End-user identity
//
// A request may carry the end user's token in the header
// "Authorization: Bearer <token>" or "Pe-User-Token: <token>" (the latter
// wins). The engine calls of that request then use it instead of the
// bridge's own token (engine.WithToken), so the engine applies the user's
// claims and lanes. A header that is present but blank, repeated with
// different values or not an RFC 6750 token68 is a 401 naming the header:
// never a fallback to the bridge's identity. Config.RequireUserToken lists
// the endpoint groups (GroupProcess, GroupUserTask, GroupTrigger) whose
// requests get 401 without a token. Tokens are never logged or echoed.
//
// # Ids and bodies
//
// Ids that become engine URL path segments (processModelId of a start,
// processInstanceId, userTaskInstanceId, the trigger name) must not be
// empty, "." or "..", hold '/', '\' or control characters, or exceed 256
// bytes; other ids are refused for control characters and length; a member
// that appears twice in one object anywhere in the body is refused. Each is
// a 400 naming the member, before any engine call.
//
// # Errors
//
// Every error reply carries micro's headers Nats-Service-Error (message)
// and Nats-Service-Error-Code (code as decimal string) and the body
//
//	{"error":{"code":404,"message":"...","field":"processModelId"}}
//
// "field" names the offending request member of a 400. Failed or timed-out
// blocking starts add "correlationId", "processInstanceId" (when the bridge
// could find the instance) and, for instances that ended in a BPMN error,
// "bpmnError":{"name","code","message",...} as the engine sent it.
//
//	code  when
//	400   request not JSON or not an object, missing/mistyped/unknown/duplicate member,
//	      an id that is not path-safe, unknown
//	      returnOn/state, bad timeout, negative offset/limit; engine 400, 422 and other 4xx
//	401   engine 401 (token missing/expired/invalid); blank or malformed Pe-User-Token or
//	      Authorization header; no token where Config.RequireUserToken asks for one
//	403   engine 403 (claim or lane missing)
//	404   engine 404 (unknown process model, instance, user task); get of an unknown id
//	409   engine 409/410/423 (task already finished, not suspended, reserved by another)
//	413   request body larger than Config.MaxRequestBytes (default 1 MiB)
//	422   blocking start whose instance ended in an error (engine error with bpmnError)
//	500   anything else, including a panic while handling the request
//	503   engine 5xx/429 or unreachable; bridge stopping; bridge at Config.MaxInFlight or,
//	      for blocking starts, Config.MaxBlockingStarts: then with header Retry-After
//	      (seconds) and "retryAfterMs" in the body
//	504   the request's timeout ran out (blocking start not done in time: the instance
//	      keeps running); engine 504
//
// # Concurrency, timeouts and stats
//
// NATS calls a subscription's handler one message at a time, so every
// request is handled in its own goroutine and answered on its reply subject
// directly: slow calls never hold up other requests. Blocking starts (at
// most Config.MaxBlockingStarts at once) and all other requests (at most
// Config.MaxInFlight) have separate limits, so a flood of blocking starts
// cannot starve list/get/finish; beyond a limit a request gets 503 at once.
// Each request runs under Config.RequestTimeout, blocking starts under
// their own timeout. Requesters must wait at least as long (`nats req
// --timeout 70s` for a default blocking start).
//
// The service speaks the micro protocol ($SRV.PING, $SRV.INFO, $SRV.STATS)
// itself with micro's types, because micro.AddService would time each
// request by its handler's return (microseconds here) and count no errors:
// $SRV.STATS shows the real requests, error replies and processing time
// (arrival to reply sent); each endpoint's "data" is {"inFlight":n}.
// Config.Observer and Config.Tracer see every answered request.
package service
