package bridge

import "time"

// Settlement is how a task's life in the bridge ended.
type Settlement string

// Settlements reported to Observer.TaskSettled.
const (
	SettledFinished  Settlement = "finished"   // the engine accepted the handler's result
	SettledBPMNError Settlement = "bpmn_error" // the engine accepted the handler's BPMN error
	SettledFailure   Settlement = "failure"    // reported with the reserved technical failure code
	SettledCancelled Settlement = "cancelled"  // the engine closed the task while it was in flight
	SettledDropped   Settlement = "dropped"    // the engine took it away or refused the outcome
	SettledReleased  Settlement = "released"   // left to lapse on purpose (no responders, deadline, shutdown)
)

// Observer receives the pump's measurements; cmd/bridge implements it with
// Prometheus metrics. Calls are made synchronously from the pump's
// goroutines, possibly with a task's lock held: they must be cheap and must
// not block or call back into the pump. Config.Observer nil means none.
type Observer interface {
	// TaskFetched: a fetch_and_lock answer handed over one task of topic.
	TaskFetched(topic string)
	// TaskPublished: one attempt of a task was published.
	TaskPublished(topic string)
	// HandlerReplied: the reply to an attempt arrived d after it was published.
	HandlerReplied(topic string, d time.Duration)
	// TaskSettled: a task ended as s, d after it was fetched.
	TaskSettled(topic string, s Settlement, d time.Duration)
	// LockExtended: one extend_lock call ended; err is nil on success.
	LockExtended(topic string, err error)
	// TopicPaused: topic paused its fetching because no handler listened.
	TopicPaused(topic string)
	// AckLost: a finish or error call got no clear answer and its retry
	// found the task closed; the earlier call most likely took effect, and
	// the task settles as reported (PumpStats.LostAcks).
	AckLost(topic string)
	// Window: the topic now has inFlight tasks held by handlers out of window slots.
	Window(topic string, inFlight, window int)
}

// Tracer starts the spans of a task's life; cmd/bridge implements it with
// OpenTelemetry. Config.Tracer nil means no spans: the pump then makes a
// W3C traceparent of its own for each attempt.
type Tracer interface {
	// StartTask starts the task's root span at the fetch that locked it.
	StartTask(topic, taskID string, fetchedAt time.Time) TaskSpan
}

// TaskSpan is the root span of one task in the bridge.
type TaskSpan interface {
	// Publish starts the span of one attempt's publication and returns the
	// traceparent the task event carries (the handler's span is its child)
	// and a function that ends the span when the attempt is over (err nil
	// for a reply, else why it ended).
	Publish() (traceparent string, end func(err error))
	// Report starts the span of one finish or error call (kind is
	// "finish" or "error") and returns the function that ends it.
	Report(kind string) (end func(err error))
	// End ends the root span with the task's settlement.
	End(s Settlement)
}
