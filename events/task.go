package events

import "time"

// Binary content mode (CloudEvents NATS protocol binding): attributes travel
// as NATS headers named "ce-<attribute>", the body is the task payload as JSON
// (datacontenttype application/json). Structured mode sends the whole event as
// JSON with content type application/cloudevents+json.
const (
	HeaderPrefix          = "ce-"
	HeaderID              = "ce-id"
	HeaderType            = "ce-type"
	HeaderSource          = "ce-source"
	HeaderSubject         = "ce-subject"
	HeaderTime            = "ce-time"
	HeaderSpecVersion     = "ce-specversion"
	HeaderDataContent     = "Content-Type"
	ContentTypeJSON       = "application/json"
	ContentTypeStructured = "application/cloudevents+json"
)

// Task is the metadata of one task event, as a handler sees it.
type Task struct {
	ID                 string // CloudEvent id = external task id (stable across re-deliveries)
	Topic              string // engine topic (CloudEvent subject)
	ProcessInstanceID  string
	ProcessModelID     string
	CorrelationID      string
	FlowNodeInstanceID string
	LockExpiresAt      time.Time
	SingleTry          bool
	TraceParent        string
	Time               time.Time // when the bridge published the event
}
