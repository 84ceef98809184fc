package bridge

import "time"

// lockPolicy decides when a task's lock is extended and how long each engine
// call of the task may take, so that a lock never lapses under a living
// handler even when the engine answers late or not at all:
//
//   - the first extend_lock of a lock starts when two thirds of it are left
//     (at 10 s of a 30 s lock), so an answer that is seconds late still
//     lands in time;
//   - each call is bounded by the time the lock has left (at least one
//     retry interval): an answer after expiry is of no use;
//   - while no call of the cycle has succeeded, another call starts every
//     tenth of the lock (3 s of 30 s), up to maxOpenExtends calls open at
//     once, so a stalled call does not keep the others from trying; the
//     first success ends the cycle (late answers of the others only move
//     the expiry further out);
//   - a finish/error call is bounded by a fifteenth of the lock (2 s of
//     30 s, at least 1 s), the same for the first retry (which starts at
//     once after a timeout), then doubling up to the whole lock: a stalled
//     call is given up early (a reporter waiting on it reports nothing
//     else) and a slow engine still gets the time it needs on a later try.
type lockPolicy struct {
	lock time.Duration
}

// maxOpenExtends bounds the extend_lock calls open at once for one task.
const maxOpenExtends = 8

// minLockStep is the shortest retry interval and call bound.
const minLockStep = 50 * time.Millisecond

// lockCycle is the state of one task's lock as the policy sees it.
type lockCycle struct {
	expiry    time.Time // local estimate: start of the last successful call + lock
	pending   bool      // an extension is due and no call started since has succeeded
	open      int       // extend_lock calls open now
	lastStart time.Time // start of the newest call
}

// retryEvery is the interval between calls of one cycle.
func (lp lockPolicy) retryEvery() time.Duration {
	return max(lp.lock/10, minLockStep)
}

// next returns when the next extend_lock call should start; ok is false
// while as many calls as allowed are open.
func (lp lockPolicy) next(c lockCycle) (at time.Time, ok bool) {
	if !c.pending {
		return c.expiry.Add(-lp.lock * 2 / 3), true
	}
	if c.open >= maxOpenExtends {
		return time.Time{}, false
	}
	return c.lastStart.Add(lp.retryEvery()), true
}

// start records a call starting at now and returns its bound.
func (lp lockPolicy) start(c *lockCycle, now time.Time) time.Duration {
	c.pending = true
	c.open++
	c.lastStart = now
	return max(c.expiry.Sub(now), lp.retryEvery())
}

// ended records the end of a call that started at start; ok is whether the
// engine extended the lock.
func (lp lockPolicy) ended(c *lockCycle, start time.Time, ok bool) {
	c.open--
	if !ok {
		return
	}
	if e := start.Add(lp.lock); e.After(c.expiry) {
		c.expiry = e
	}
	c.pending = false
}

// adopt takes over a new lock from a re-fetch that started at start.
func (lp lockPolicy) adopt(c *lockCycle, start time.Time) {
	if e := start.Add(lp.lock); e.After(c.expiry) {
		c.expiry = e
	}
	c.pending = false
}

// reportTimeout bounds the n-th (0-based) try of a finish/error call.
func (lp lockPolicy) reportTimeout(n int) time.Duration {
	d := max(lp.lock/15, time.Second)
	for i := 1; i < n && d < lp.lock; i++ {
		d *= 2
	}
	return min(d, max(lp.lock, time.Second))
}
