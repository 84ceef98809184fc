package events

import (
	"errors"
	"fmt"
	"strings"
)

// Subject prefixes and service subjects of wire contract v1.
const (
	// TaskPrefix + token(topic): one CloudEvent per locked external task.
	TaskPrefix = "pe.task."
	// CancelPrefix + token(topic): a CloudEvent (TypeTaskCancelled) when the
	// engine closed a task that was handed out (boundary event, terminate,
	// lock lost). Its id is the task id. Every replica should listen (no queue group).
	CancelPrefix = "pe.cancel."
	// EventPrefix + event name: engine notifications.
	EventPrefix = "pe.event."

	// DefaultQueueGroup is the queue group handlers join by default.
	DefaultQueueGroup = "pe-handlers"
)

// Request/reply subjects of the pe-bridge micro service.
const (
	ServiceName                  = "pe-bridge"
	SubjectPrefix                = "pe"
	SubjectProcessStart          = "pe.process.start"
	SubjectProcessTerminate      = "pe.process.terminate"
	SubjectProcessGet            = "pe.process.get"
	SubjectProcessQuery          = "pe.process.query"
	SubjectUserTaskList          = "pe.usertask.list"
	SubjectUserTaskGet           = "pe.usertask.get"
	SubjectUserTaskReserve       = "pe.usertask.reserve"
	SubjectUserTaskCancelReserve = "pe.usertask.cancel_reservation"
	SubjectUserTaskFinish        = "pe.usertask.finish"
	SubjectMessageTrigger        = "pe.message.trigger"
	SubjectSignalTrigger         = "pe.signal.trigger"
)

// CloudEvent types.
const (
	TypeTask          = "io.pebridge.task.v1"
	TypeTaskCancelled = "io.pebridge.task.cancelled.v1"
	// TypeEventPrefix + event name, e.g. io.pebridge.event.user_task_waiting.v1.
	TypeEventPrefix = "io.pebridge.event."
	TypeEventSuffix = ".v1"
)

// EventType is the CloudEvent type of engine notification name.
func EventType(name string) string { return TypeEventPrefix + name + TypeEventSuffix }

// CloudEvent extension attributes on task events (lowercase alphanumeric, as
// the CloudEvents spec requires).
const (
	ExtProcessInstanceID  = "processinstanceid"
	ExtProcessModelID     = "processmodelid"
	ExtCorrelationID      = "correlationid"
	ExtFlowNodeInstanceID = "flownodeinstanceid"
	ExtLockExpiresAt      = "lockexpiresat" // RFC 3339 time the engine lock currently runs out
	ExtSingleTry          = "singletry"     // "true" for single-try tasks
	ExtTopic              = "topic"         // the engine topic, unmapped
	ExtTraceParent        = "traceparent"   // W3C trace context
	ExtCancelReason       = "reason"        // on TypeTaskCancelled
)

// ErrInvalidTopic is returned for topics that cannot be mapped.
var ErrInvalidTopic = errors.New("events: invalid topic")

// MaxTopicLen bounds topic names (bytes) so subjects stay well inside NATS limits.
const MaxTopicLen = 256

// TopicToken maps an engine topic to one valid NATS subject token.
//
// Rule: the bytes A–Z, a–z, 0–9, '_' and '-' stand for themselves; every other
// byte (including '.', '*', '>', '%', spaces and each byte of non-ASCII UTF-8)
// becomes '%' followed by two upper-case hex digits, as in URL encoding.
// The mapping is injective, so two distinct topics never share a subject, and
// TopicFromToken reverses it. An empty topic or one longer than MaxTopicLen is
// rejected.
func TopicToken(topic string) (string, error) {
	if topic == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidTopic)
	}
	if len(topic) > MaxTopicLen {
		return "", fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidTopic, len(topic), MaxTopicLen)
	}
	plain := true
	for i := 0; i < len(topic); i++ {
		if !tokenSafe(topic[i]) {
			plain = false
			break
		}
	}
	if plain {
		return topic, nil
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(topic) + 8)
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		if tokenSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xF])
	}
	return b.String(), nil
}

// TopicFromToken reverses TopicToken.
func TopicFromToken(token string) (string, error) {
	if token == "" {
		return "", fmt.Errorf("%w: empty token", ErrInvalidTopic)
	}
	var b strings.Builder
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case tokenSafe(c):
			b.WriteByte(c)
		case c == '%' && i+2 < len(token) && isUpperHex(token[i+1]) && isUpperHex(token[i+2]):
			v := unhex(token[i+1])<<4 | unhex(token[i+2])
			if tokenSafe(v) { // not canonical: would have been written plainly
				return "", fmt.Errorf("%w: token %q escapes a plain byte at %d", ErrInvalidTopic, token, i)
			}
			b.WriteByte(v)
			i += 2
		default:
			return "", fmt.Errorf("%w: token %q has byte %q at %d", ErrInvalidTopic, token, c, i)
		}
	}
	return b.String(), nil
}

// TaskSubject is the subject task events of topic are published on.
func TaskSubject(topic string) (string, error) {
	t, err := TopicToken(topic)
	if err != nil {
		return "", err
	}
	return TaskPrefix + t, nil
}

// CancelSubject is the subject cancel events of topic are published on.
func CancelSubject(topic string) (string, error) {
	t, err := TopicToken(topic)
	if err != nil {
		return "", err
	}
	return CancelPrefix + t, nil
}

func tokenSafe(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func isUpperHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}
