package bridge

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// PumpStats counts what a Pump did since it was created.
type PumpStats struct {
	Fetched         uint64 `json:"fetched"`          // tasks received from fetch_and_lock
	Published       uint64 `json:"published"`        // task events published (first attempts and re-publications)
	Retries         uint64 `json:"retries"`          // re-publications after a technical failure or no responders
	Finished        uint64 `json:"finished"`         // tasks finished in the engine
	BPMNErrors      uint64 `json:"bpmn_errors"`      // BPMN errors raised on behalf of a handler
	Failures        uint64 `json:"failures"`         // tasks reported with the reserved failure code
	Cancelled       uint64 `json:"cancelled"`        // tasks the engine closed while in flight (409 on extend)
	Dropped         uint64 `json:"dropped"`          // tasks the engine took away: 423/404 on extend, 404/409/423 on finish/error, rejected outcomes
	Released        uint64 `json:"released"`         // multi-try tasks left to lapse on purpose: no responders, max processing time, shutdown
	NoResponders    uint64 `json:"no_responders"`    // publications nobody listened to
	LockExtensions  uint64 `json:"lock_extensions"`  // successful extend_lock calls
	ExtendErrors    uint64 `json:"extend_errors"`    // failed extend_lock calls that were retried
	ReportErrors    uint64 `json:"report_errors"`    // failed finish/error calls that were retried
	FetchErrors     uint64 `json:"fetch_errors"`     // failed fetch_and_lock calls
	HandlerTimeouts uint64 `json:"handler_timeouts"` // attempts without a reply within HandlerTimeout
	BadReplies      uint64 `json:"bad_replies"`      // malformed replies
	LateReplies     uint64 `json:"late_replies"`     // replies to an attempt that was no longer current (dropped)
	BadTasks        uint64 `json:"bad_tasks"`        // tasks with an invalid topic or payload from the engine, or too large to publish
	UnknownReplies  uint64 `json:"unknown_replies"`  // replies to a key this bridge never issued (forged or misrouted; dropped)
	Refetched       uint64 `json:"refetched"`        // tasks the engine handed out again while held (kept their attempt)
	Republished     uint64 `json:"republished"`      // awaited attempts published again after a NATS reconnect
	HedgedFetches   uint64 `json:"hedged_fetches"`   // fetches started beside one that took too long while tasks waited
	Rejected        uint64 `json:"rejected"`         // impossible task events (logged and ignored)
	LostAcks        uint64 `json:"lost_acks"`        // reports whose answer was lost and whose retry got 409: counted as reported
	InFlight        int64  `json:"in_flight"`        // tasks held now
}

type counters struct {
	fetched, published, retries, finished, bpmnErrors, failures, cancelled, dropped, released,
	noResponders, lockExtensions, extendErrors, reportErrors, fetchErrors, handlerTimeouts,
	badReplies, lateReplies, badTasks, unknownReplies, refetched, republished, hedgedFetches,
	rejected, lostAcks atomic.Uint64
	inFlight atomic.Int64
}

func (c *counters) snapshot() PumpStats {
	return PumpStats{
		Fetched:         c.fetched.Load(),
		Published:       c.published.Load(),
		Retries:         c.retries.Load(),
		Finished:        c.finished.Load(),
		BPMNErrors:      c.bpmnErrors.Load(),
		Failures:        c.failures.Load(),
		Cancelled:       c.cancelled.Load(),
		Dropped:         c.dropped.Load(),
		Released:        c.released.Load(),
		NoResponders:    c.noResponders.Load(),
		LockExtensions:  c.lockExtensions.Load(),
		ExtendErrors:    c.extendErrors.Load(),
		ReportErrors:    c.reportErrors.Load(),
		FetchErrors:     c.fetchErrors.Load(),
		HandlerTimeouts: c.handlerTimeouts.Load(),
		BadReplies:      c.badReplies.Load(),
		LateReplies:     c.lateReplies.Load(),
		BadTasks:        c.badTasks.Load(),
		UnknownReplies:  c.unknownReplies.Load(),
		Refetched:       c.refetched.Load(),
		Republished:     c.republished.Load(),
		HedgedFetches:   c.hedgedFetches.Load(),
		Rejected:        c.rejected.Load(),
		LostAcks:        c.lostAcks.Load(),
		InFlight:        c.inFlight.Load(),
	}
}

// backoff returns the n-th (1-based) delay of an exponential backoff from base
// to limit with "equal jitter": half the step fixed, half random.
func backoff(n int, base, limit time.Duration) time.Duration {
	if base <= 0 {
		return 0
	}
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}
