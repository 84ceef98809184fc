package bridge

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pe-bridge/pe-bridge/events"
)

// ContentMode selects how task events are encoded on NATS (CloudEvents NATS
// protocol binding); it is events.Mode, the one codec's mode.
type ContentMode = events.Mode

const (
	// Binary puts the CloudEvent attributes in "ce-*" headers and the task
	// payload, as JSON, in the body (the default).
	Binary = events.Binary
	// Structured sends the whole event as one JSON document with content type
	// application/cloudevents+json.
	Structured = events.Structured
)

// ParseContentMode parses "binary" or "structured" ("" = binary).
func ParseContentMode(s string) (ContentMode, error) {
	m, err := events.ParseMode(s)
	if err != nil {
		return Binary, fmt.Errorf("bridge: unknown content mode %q (want binary or structured)", s)
	}
	return m, nil
}

// Defaults of Config; a zero field takes the value here.
const (
	DefaultTopicRefresh          = 30 * time.Second
	DefaultLockDuration          = 30 * time.Second
	DefaultLongPollTimeout       = 10 * time.Second
	DefaultWindow                = 100
	DefaultMaxProcessingTime     = 30 * time.Minute
	DefaultHandlerTimeout        = 5 * time.Minute
	DefaultMaxAttempts           = 3
	DefaultRetryBackoff          = time.Second
	DefaultMaxRetryBackoff       = 30 * time.Second
	DefaultNoResponderBackoff    = time.Second
	DefaultMaxNoResponderBackoff = 30 * time.Second
	DefaultFailureErrorCode      = "TechnicalFailure"
	DefaultDrainTimeout          = 30 * time.Second
	DefaultSource                = "pe-bridge"
	DefaultReportConcurrency     = 64
	DefaultExtendConcurrency     = 64
	// MinLockDuration is the shortest lock the pump accepts.
	MinLockDuration = time.Second
)

// Config tunes a Pump. Every zero value means the documented default, so
// Config{} is a working configuration.
type Config struct {
	// WorkerID is the engine worker id of every lock. Default
	// "pe-bridge-<hostname>-<6 random hex digits>".
	WorkerID string
	// Topics are the engine topics to serve. Empty means every deployed topic,
	// re-read every TopicRefresh (new topics start, vanished ones stop fetching).
	Topics []string
	// TopicRefresh is the interval of the deployed-topics refresh. Default 30s.
	TopicRefresh time.Duration
	// LockDuration is the engine lock of fetched tasks and of each extension.
	// Default 30s, at least 1s. A lock is extended by LockDuration when two
	// thirds of it are left, retried every LockDuration/10 until a call
	// succeeds (see the package documentation).
	LockDuration time.Duration
	// LongPollTimeout is the fetch_and_lock long poll. Default 10s. Each
	// fetch is bounded by LongPollTimeout plus a small margin
	// (LongPollTimeout/4, between 500ms and 3s), so a stalled one never
	// halts its topic for longer.
	LongPollTimeout time.Duration
	// Window is the number of tasks per topic handed to handlers at once
	// (fetched, handler outcome not yet in). A topic's poller never fetches
	// more than the free slots. Up to another Window per topic may be waiting
	// for the engine to accept their outcome (reporting, or queued behind
	// ReportConcurrency); when those are full too, fetching stops. Default 100.
	Window int
	// MaxProcessingTime bounds how long one task is kept locked, from fetch,
	// across all attempts. Past it, a single-try task is reported with
	// FailureErrorCode and a multi-try task is left to lapse (the engine offers
	// it again). Default 30 min. MaxProcessingTimeByTopic overrides it per topic.
	MaxProcessingTime        time.Duration
	MaxProcessingTimeByTopic map[string]time.Duration
	// HandlerTimeout is how long the bridge waits for the reply to one
	// publication; no reply in time counts as a technical failure. Default 5 min.
	HandlerTimeout time.Duration
	// MaxAttempts is the number of handler attempts before a technical failure
	// is reported to the engine with FailureErrorCode. Default 3.
	MaxAttempts int
	// RetryBackoff and MaxRetryBackoff bound the exponential backoff (with
	// jitter) between handler attempts, engine call retries and fetch retries.
	// Defaults 1s and 30s.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// NoResponderBackoff and MaxNoResponderBackoff bound the pause of a topic
	// (and of single-try re-publication) when no handler listens. Defaults 1s and 30s.
	NoResponderBackoff    time.Duration
	MaxNoResponderBackoff time.Duration
	// FailureErrorCode is the reserved BPMN error code reported after the retry
	// budget. Default "TechnicalFailure".
	FailureErrorCode string
	// ContentMode of task events. Default Binary. ContentModeByTopic
	// overrides it per topic (e.g. structured for one consumer that wants
	// whole events).
	ContentMode        ContentMode
	ContentModeByTopic map[string]ContentMode
	// MaxReplyBytes bounds a handler reply; larger ones are malformed.
	// Default events.DefaultMaxReplyBytes (1 MiB).
	MaxReplyBytes int
	// DrainTimeout is how long Run, once its context is cancelled, keeps
	// serving in-flight tasks before it gives up on them. Default 30s.
	DrainTimeout time.Duration
	// Source is the CloudEvent source attribute, e.g. "pe-bridge://engine:8000".
	// Default "pe-bridge".
	Source string
	// ReportConcurrency bounds the finish and error calls the pump has open
	// at once, over all topics; further outcomes wait in a queue (they still
	// hold their place among the tasks capped at another Window). The drain's
	// final reports have a bound of the same size of their own. Default 64.
	ReportConcurrency int
	// ExtendConcurrency bounds the extend_lock calls open at once, separately
	// from the reports, so queued outcomes never delay an extension. Default 64.
	// Long polls (one per topic) are not counted by either bound; the engine
	// client should keep at least ReportConcurrency + ExtendConcurrency + the
	// number of topics idle connections.
	ExtendConcurrency int
	// Observer receives the pump's measurements; nil means none.
	Observer Observer
	// Tracer starts the spans of each task; nil means none (the pump then
	// makes each attempt's W3C traceparent itself).
	Tracer Tracer
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.WorkerID == "" {
		c.WorkerID = defaultWorkerID()
	}
	if c.TopicRefresh == 0 {
		c.TopicRefresh = DefaultTopicRefresh
	}
	if c.LockDuration == 0 {
		c.LockDuration = DefaultLockDuration
	}
	if c.LongPollTimeout == 0 {
		c.LongPollTimeout = DefaultLongPollTimeout
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.MaxProcessingTime == 0 {
		c.MaxProcessingTime = DefaultMaxProcessingTime
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = DefaultHandlerTimeout
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if c.NoResponderBackoff == 0 {
		c.NoResponderBackoff = DefaultNoResponderBackoff
	}
	if c.MaxNoResponderBackoff == 0 {
		c.MaxNoResponderBackoff = DefaultMaxNoResponderBackoff
	}
	if c.FailureErrorCode == "" {
		c.FailureErrorCode = DefaultFailureErrorCode
	}
	if c.MaxReplyBytes == 0 {
		c.MaxReplyBytes = events.DefaultMaxReplyBytes
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Source == "" {
		c.Source = DefaultSource
	}
	if c.ReportConcurrency == 0 {
		c.ReportConcurrency = DefaultReportConcurrency
	}
	if c.ExtendConcurrency == 0 {
		c.ExtendConcurrency = DefaultExtendConcurrency
	}
	return c
}

// Validate reports the first invalid setting of c, after defaults are applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	neg := func(name string, d time.Duration) {
		if d < 0 {
			errs = append(errs, fmt.Errorf("bridge: %s is negative (%s)", name, d))
		}
	}
	neg("topic refresh", c.TopicRefresh)
	neg("long poll timeout", c.LongPollTimeout)
	neg("max processing time", c.MaxProcessingTime)
	neg("handler timeout", c.HandlerTimeout)
	neg("retry backoff", c.RetryBackoff)
	neg("max retry backoff", c.MaxRetryBackoff)
	neg("no-responder backoff", c.NoResponderBackoff)
	neg("max no-responder backoff", c.MaxNoResponderBackoff)
	neg("drain timeout", c.DrainTimeout)
	if c.LockDuration < MinLockDuration {
		errs = append(errs, fmt.Errorf("bridge: lock duration %s is below %s", c.LockDuration, MinLockDuration))
	}
	if c.Window < 0 {
		errs = append(errs, fmt.Errorf("bridge: window %d is negative", c.Window))
	}
	if c.ReportConcurrency < 0 {
		errs = append(errs, fmt.Errorf("bridge: report concurrency %d is negative", c.ReportConcurrency))
	}
	if c.ExtendConcurrency < 0 {
		errs = append(errs, fmt.Errorf("bridge: extend concurrency %d is negative", c.ExtendConcurrency))
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("bridge: max attempts %d is negative", c.MaxAttempts))
	}
	if c.MaxReplyBytes < 0 {
		errs = append(errs, fmt.Errorf("bridge: max reply bytes %d is negative", c.MaxReplyBytes))
	}
	if c.MaxRetryBackoff < c.RetryBackoff {
		errs = append(errs, fmt.Errorf("bridge: max retry backoff %s is below retry backoff %s", c.MaxRetryBackoff, c.RetryBackoff))
	}
	if c.MaxNoResponderBackoff < c.NoResponderBackoff {
		errs = append(errs, fmt.Errorf("bridge: max no-responder backoff %s is below no-responder backoff %s",
			c.MaxNoResponderBackoff, c.NoResponderBackoff))
	}
	if c.ContentMode != Binary && c.ContentMode != Structured {
		errs = append(errs, fmt.Errorf("bridge: unknown content mode %d", int(c.ContentMode)))
	}
	for topic, m := range c.ContentModeByTopic {
		if m != Binary && m != Structured {
			errs = append(errs, fmt.Errorf("bridge: unknown content mode %d of topic %q", int(m), topic))
		}
	}
	for topic, d := range c.MaxProcessingTimeByTopic {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("bridge: max processing time of topic %q is not positive (%s)", topic, d))
		}
	}
	for _, topic := range c.Topics {
		if _, err := events.TaskSubject(topic); err != nil {
			errs = append(errs, fmt.Errorf("bridge: topic %q: %w", topic, err))
		}
	}
	return errors.Join(errs...)
}

func (c Config) maxProcessingTime(topic string) time.Duration {
	if d, ok := c.MaxProcessingTimeByTopic[topic]; ok && d > 0 {
		return d
	}
	return c.MaxProcessingTime
}

func (c Config) contentMode(topic string) ContentMode {
	if m, ok := c.ContentModeByTopic[topic]; ok {
		return m
	}
	return c.ContentMode
}

// fetchMargin is how much longer than the long poll a fetch may take.
func (c Config) fetchMargin() time.Duration {
	return min(max(c.LongPollTimeout/4, 500*time.Millisecond), 3*time.Second)
}

// hedgeDelay is how long a fetch may stay open, while the topic is busy
// (a fetch brought tasks within the last long poll), before another fetch
// starts beside it:
// with tasks waiting the engine answers at once, so a fetch that takes this
// long is probably stalled (or the topic went quiet: then two long polls
// wait side by side until the next one comes back empty).
func (c Config) hedgeDelay() time.Duration {
	return min(max(c.LongPollTimeout/20, 100*time.Millisecond), 500*time.Millisecond)
}

// fetchThreshold is the number of free window slots a poller waits for
// before it fetches, so a full window refills in batches, not task by task.
func (c Config) fetchThreshold() int {
	return max(1, c.Window/4)
}

func defaultWorkerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "pe-bridge-" + host + "-" + hex.EncodeToString(b[:])
}
