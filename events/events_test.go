package events_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pe-bridge/pe-bridge/events"
)

func TestTopicToken(t *testing.T) {
	cases := []struct{ topic, want string }{
		{"SampleExternalTask", "SampleExternalTask"},
		{"do_it-now", "do_it-now"},
		{"order.created", "order%2Ecreated"},
		{"a b", "a%20b"},
		{"*", "%2A"},
		{">", "%3E"},
		{"100%", "100%25"},
		{"Grüße", "Gr%C3%BC%C3%9Fe"},
		{"tab\there", "tab%09here"},
	}
	for _, c := range cases {
		got, err := events.TopicToken(c.topic)
		if err != nil || got != c.want {
			t.Errorf("TopicToken(%q) = %q, %v; want %q", c.topic, got, err, c.want)
		}
		back, err := events.TopicFromToken(got)
		if err != nil || back != c.topic {
			t.Errorf("TopicFromToken(%q) = %q, %v; want %q", got, back, err, c.topic)
		}
	}
}

func TestTopicTokenRejects(t *testing.T) {
	for _, topic := range []string{"", strings.Repeat("x", events.MaxTopicLen+1)} {
		if _, err := events.TopicToken(topic); !errors.Is(err, events.ErrInvalidTopic) {
			t.Errorf("TopicToken(%.10q…) err = %v, want ErrInvalidTopic", topic, err)
		}
	}
	for _, tok := range []string{"", "a.b", "%2", "%zz", "%41" /* 'A' must be plain */, "a b", "%2e" /* lower hex */} {
		if _, err := events.TopicFromToken(tok); !errors.Is(err, events.ErrInvalidTopic) {
			t.Errorf("TopicFromToken(%q) err = %v, want ErrInvalidTopic", tok, err)
		}
	}
}

func TestSubjects(t *testing.T) {
	s, err := events.TaskSubject("a.b")
	if err != nil || s != "pe.task.a%2Eb" {
		t.Fatalf("TaskSubject = %q, %v", s, err)
	}
	s, err = events.CancelSubject("x")
	if err != nil || s != "pe.cancel.x" {
		t.Fatalf("CancelSubject = %q, %v", s, err)
	}
	if got := events.EventType("process_ended"); got != "io.pebridge.event.process_ended.v1" {
		t.Fatalf("EventType = %q", got)
	}
}

// validToken reports whether tok is one valid NATS subject token.
func validToken(tok string) bool {
	if tok == "" || tok == "*" || tok == ">" {
		return false
	}
	for i := 0; i < len(tok); i++ {
		switch tok[i] {
		case '.', ' ', '\t', '\r', '\n', '*', '>':
			return false
		}
		if tok[i] < 0x21 || tok[i] > 0x7e {
			return false
		}
	}
	return true
}

// FuzzTopicToken checks the mapping is total on valid input, yields one valid
// printable-ASCII NATS token, and is injective (it round-trips), so two topics
// can never collide on one subject.
func FuzzTopicToken(f *testing.F) {
	for _, s := range []string{"SampleExternalTask", "order.created", "a b", "*", ">", "100%", "Grüße", "%41", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		tok, err := events.TopicToken(topic)
		if topic == "" || len(topic) > events.MaxTopicLen {
			if err == nil {
				t.Fatalf("TopicToken(%q) accepted an invalid topic", topic)
			}
			return
		}
		if err != nil {
			t.Fatalf("TopicToken(%q): %v", topic, err)
		}
		if !validToken(tok) || !utf8.ValidString(tok) {
			t.Fatalf("TopicToken(%q) = %q, not a valid NATS token", topic, tok)
		}
		back, err := events.TopicFromToken(tok)
		if err != nil || back != topic {
			t.Fatalf("round trip %q -> %q -> %q, %v", topic, tok, back, err)
		}
	})
}

// FuzzTopicFromToken: decoding arbitrary tokens never panics, and whatever it
// accepts re-encodes to the same token (canonical form).
func FuzzTopicFromToken(f *testing.F) {
	for _, s := range []string{"abc", "a%2Eb", "%", "%4", "%41", "%C3%BC"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		topic, err := events.TopicFromToken(tok)
		if err != nil {
			return
		}
		again, err := events.TopicToken(topic)
		if len(topic) > events.MaxTopicLen {
			return
		}
		if err != nil || again != tok {
			t.Fatalf("%q decoded to %q which encodes to %q, %v", tok, topic, again, err)
		}
	})
}
