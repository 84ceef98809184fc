// Package watermillce is a Watermill marshaler for watermill-nats/v2 that
// puts Watermill messages on NATS as CloudEvents (CloudEvents 1.0, NATS
// protocol binding) through the one codec of pe-bridge, events.Encode and
// events.Decode, so the event forwarder's messages carry exactly the ce-*
// headers and body of docs/contract.md and no Watermill headers.
//
// A message maps onto an event as follows: message UUID = CloudEvent id;
// metadata "type", "source", "subject", "time" (RFC 3339) and
// "datacontenttype" = those attributes; every other metadata key is an
// extension (lower-case letters and digits); payload = data. Marshal also
// sets Nats-Msg-Id to the id, so a JetStream stream de-duplicates
// re-publishes of one event.
//
// It imports Watermill, nats.go and events; nothing of the bridge.
package watermillce

import (
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/pe-bridge/pe-bridge/events"
)

// Metadata keys of the CloudEvent attributes other than id.
const (
	MetaType            = "type"
	MetaSource          = "source"
	MetaSubject         = "subject"
	MetaTime            = "time"
	MetaDataContentType = "datacontenttype"
)

// HeaderMsgID is the NATS header JetStream de-duplicates on; Marshal sets it
// to the CloudEvent id.
const HeaderMsgID = "Nats-Msg-Id"

// Marshaler encodes and decodes Watermill messages as CloudEvents. The zero
// value uses binary content mode; Mode events.Structured puts the whole
// event into the body. It satisfies watermill-nats' MarshalerUnmarshaler.
type Marshaler struct {
	Mode events.Mode
}

// Event is the CloudEvent of msg.
func Event(msg *message.Message) (*events.Event, error) {
	ev := &events.Event{ID: msg.UUID}
	for k, v := range msg.Metadata {
		switch k {
		case MetaType:
			ev.Type = v
		case MetaSource:
			ev.Source = v
		case MetaSubject:
			ev.Subject = v
		case MetaDataContentType:
			ev.DataContentType = v
		case MetaTime:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return nil, fmt.Errorf("watermillce: metadata time %q: %w", v, err)
			}
			ev.Time = t
		default:
			if v != "" {
				ev.Extensions = append(ev.Extensions, events.Extension{Name: k, Value: v})
			}
		}
	}
	if len(msg.Payload) > 0 {
		ev.Data = msg.Payload
	}
	return ev, ev.Validate()
}

// Message is the Watermill message of ev (the inverse of Event).
func Message(ev *events.Event) *message.Message {
	msg := message.NewMessage(ev.ID, ev.Data)
	set := func(k, v string) {
		if v != "" {
			msg.Metadata.Set(k, v)
		}
	}
	set(MetaType, ev.Type)
	set(MetaSource, ev.Source)
	set(MetaSubject, ev.Subject)
	set(MetaDataContentType, ev.DataContentType)
	if !ev.Time.IsZero() {
		set(MetaTime, ev.Time.UTC().Format(time.RFC3339Nano))
	}
	for _, x := range ev.Extensions {
		set(x.Name, x.Value)
	}
	return msg
}

// Marshal encodes msg for subject topic.
func (m Marshaler) Marshal(topic string, msg *message.Message) (*nats.Msg, error) {
	ev, err := Event(msg)
	if err != nil {
		return nil, err
	}
	h := nats.Header{}
	body, err := events.Encode(ev, m.Mode, events.Header(h))
	if err != nil {
		return nil, err
	}
	h[HeaderMsgID] = []string{ev.ID}
	return &nats.Msg{Subject: topic, Header: h, Data: body}, nil
}

// Unmarshal decodes a CloudEvent in either content mode into a message
// whose UUID is the CloudEvent id (the de-duplication key).
func (Marshaler) Unmarshal(nm *nats.Msg) (*message.Message, error) {
	ev, err := events.Decode(events.Header(nm.Header), nm.Data)
	if err != nil {
		return nil, err
	}
	return Message(ev), nil
}
