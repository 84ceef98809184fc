package bridge

import (
	"errors"
	"fmt"
)

// The life cycle of one locked external task in the pump. transition is the
// only place a task's state changes: the task feeds it events (a reply, a
// timer, an engine answer) and carries out the actions it returns. The
// table, as (state, event) → next state + actions:
//
//	state        event            → next         actions
//	new          deliver          → awaiting     publish
//	new          invalid          → reporting    freeSlot, failure, report
//	awaiting     outcome          → reporting    endAttempt, freeSlot, outcome, report
//	awaiting     failed           → backoff      endAttempt, armRetry              (retries left)
//	                              → reporting    endAttempt, freeSlot, failure, report (budget used up)
//	awaiting     noResponders     → backoff      endAttempt, pause, armRetry       (single-try; the pump
//	                                                  passes any task as single-try here within 15 s of a NATS reconnect)
//	                              → done         endAttempt, pause, close(released) (multi-try)
//	awaiting     tooLarge         → reporting    endAttempt, freeSlot, failure, report
//	awaiting     reconnected      → awaiting     endAttempt, publish
//	awaiting     deadline         → reporting    endAttempt, freeSlot, failure, report (single-try)
//	                              → done         endAttempt, close(released)        (multi-try)
//	backoff      retryDue         → awaiting     publish
//	backoff      deadline         → as awaiting/deadline, without endAttempt
//	awaiting,    gone             → done         endAttempt, cancelEvent, close(cancelled)
//	backoff      lockLost         → done         endAttempt, cancelEvent, close(dropped)
//	             abandon          → reporting    endAttempt, freeSlot, failure, final, report (single-try)
//	                              → done         endAttempt, close(released)        (multi-try)
//	reporting    reportDone       → done         close(by outcome)
//	reporting    reportRefused    → done         close(dropped)
//	reporting    reportFailed     → reportWait   armReportRetry
//	reportWait   reportDue        → reporting    report
//	reportWait   abandon          → reporting    final, report
//	reporting,   gone             → same         stopLock (our own outcome may have closed it)
//	reportWait   lockLost         → done         cancelEvent, close(dropped)
//	reporting    abandon          → reporting    final (the queued or running call goes on)
//	any live     refetched        → same         adoptLock
//	any live     cutOff           → done         endAttempt, close(released)
//	live, other  reconnected, deadline (reporting, reportWait) → same, nothing
//
// Every other pair is impossible and rejected with an error (the task keeps
// its state): for example a reply in backoff (reply keys are removed when an
// attempt ends) or any event once done. TestTransitionTable covers every pair.

// taskState is where a task is in its life; stDone is final.
type taskState uint8

const (
	stNew        taskState = iota // fetched; nothing published yet
	stAwaiting                    // an attempt is published; waiting for the reply to its key
	stBackoff                     // waiting before the next publication
	stReporting                   // an outcome is queued for, or in, a finish/error call
	stReportWait                  // a finish/error call failed temporarily; waiting to retry
	stDone                        // settled: nothing more is sent
	numStates
)

var stateNames = [...]string{"new", "awaiting", "backoff", "reporting", "report_wait", "done"}

func (s taskState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("taskState(%d)", int(s))
}

// lifeEvent is something that happens to a task.
type lifeEvent uint8

const (
	evDeliver       lifeEvent = iota // the fetched task is valid: publish it
	evInvalid                        // the engine sent a task that cannot be delivered
	evOutcome                        // the reply to the awaited attempt: success or BPMN error
	evFailed                         // the awaited attempt failed: failure reply, malformed reply, handler timeout
	evNoResponders                   // nobody received the awaited attempt (no responders, publish error)
	evTooLarge                       // the task event is above the NATS server's max_payload
	evReconnected                    // the NATS connection came back: the awaited attempt may be lost
	evRetryDue                       // the backoff is over
	evDeadline                       // max processing time reached
	evReportDone                     // the engine accepted the outcome
	evReportRefused                  // the engine refused the outcome for good (404, 409, 423, other 4xx)
	evReportFailed                   // a temporary error reporting the outcome
	evReportDue                      // time to retry the report
	evGone                           // extend_lock 409: the engine closed the task
	evLockLost                       // extend_lock 423/404: another worker owns it, or it is gone
	evRefetched                      // the engine handed out the task again while we hold it
	evAbandon                        // the drain time is over
	evCutOff                         // the pump stopped; an engine call was cut off
	numEvents
)

var eventNames = [...]string{"deliver", "invalid", "outcome", "failed", "no_responders", "too_large",
	"reconnected", "retry_due", "deadline", "report_done", "report_refused", "report_failed", "report_due",
	"gone", "lock_lost", "refetched", "abandon", "cut_off"}

func (e lifeEvent) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return fmt.Sprintf("lifeEvent(%d)", int(e))
}

// action is a set of things the task does on a transition, carried out in
// the order of the constants.
type action uint16

const (
	actEndAttempt     action = 1 << iota // forget the attempt's reply key, stop its handler timeout
	actFreeSlot                          // the handler is done with it: free the window slot
	actPause                             // nobody listens: pause the topic
	actFailure                           // the pending outcome is the reserved technical failure
	actOutcome                           // the pending outcome is the handler's
	actFinal                             // the pending report is the last try (shutdown)
	actReport                            // queue the pending outcome for a finish/error call
	actArmRetry                          // arm the backoff before the next publication
	actArmReportRetry                    // arm the backoff before the next report call
	actPublish                           // publish a new attempt (new reply key, handler timeout)
	actStopLock                          // stop extending the lock
	actAdoptLock                         // take over the lock of the re-fetch
	actCancelEvent                       // tell handlers the task is cancelled
	actClose                             // final: timers stop, tables forget it
)

var actionNames = []string{"endAttempt", "freeSlot", "pause", "failure", "outcome", "final", "report",
	"armRetry", "armReportRetry", "publish", "stopLock", "adoptLock", "cancelEvent", "close"}

func (a action) String() string {
	s := ""
	for i, n := range actionNames {
		if a&(1<<i) != 0 {
			if s != "" {
				s += ","
			}
			s += n
		}
	}
	return s
}

// cond are the facts about a task a transition may depend on.
type cond struct {
	singleTry   bool
	retriesLeft bool // another attempt is allowed after this failure
}

// step is the result of a transition. settle names how the task ended when
// act has actClose and the settlement is known from the event alone ("" =
// from the reported outcome).
type step struct {
	next   taskState
	act    action
	settle Settlement
}

// errImpossible is matched by every rejected transition.
var errImpossible = errors.New("bridge: impossible task transition")

// transition is the task life cycle (see the table above).
func transition(s taskState, ev lifeEvent, c cond) (step, error) {
	live := s != stNew && s != stDone
	reject := func() (step, error) {
		return step{next: s}, fmt.Errorf("%w: %s in state %s", errImpossible, ev, s)
	}
	stay := step{next: s}
	failure := step{next: stReporting, act: actFreeSlot | actFailure | actReport}
	switch {
	case ev == evRefetched && live:
		return step{next: s, act: actAdoptLock}, nil
	case ev == evCutOff && live:
		return step{next: stDone, act: actEndAttempt | actClose, settle: SettledReleased}, nil
	}
	switch s {
	case stNew:
		switch ev {
		case evDeliver:
			return step{next: stAwaiting, act: actPublish}, nil
		case evInvalid:
			return failure, nil
		}
	case stAwaiting, stBackoff:
		end := action(0)
		if s == stAwaiting {
			end = actEndAttempt
		}
		switch ev {
		case evDeadline, evAbandon:
			if !c.singleTry {
				return step{next: stDone, act: end | actClose, settle: SettledReleased}, nil
			}
			f := failure
			f.act |= end
			if ev == evAbandon {
				f.act |= actFinal
			}
			return f, nil
		case evGone:
			return step{next: stDone, act: end | actCancelEvent | actClose, settle: SettledCancelled}, nil
		case evLockLost:
			return step{next: stDone, act: end | actCancelEvent | actClose, settle: SettledDropped}, nil
		}
		if s == stBackoff {
			switch ev {
			case evRetryDue:
				return step{next: stAwaiting, act: actPublish}, nil
			case evReconnected:
				return stay, nil
			}
			break
		}
		switch ev {
		case evOutcome:
			return step{next: stReporting, act: actEndAttempt | actFreeSlot | actOutcome | actReport}, nil
		case evFailed:
			if c.retriesLeft {
				return step{next: stBackoff, act: actEndAttempt | actArmRetry}, nil
			}
			f := failure
			f.act |= actEndAttempt
			return f, nil
		case evNoResponders:
			if c.singleTry {
				return step{next: stBackoff, act: actEndAttempt | actPause | actArmRetry}, nil
			}
			return step{next: stDone, act: actEndAttempt | actPause | actClose, settle: SettledReleased}, nil
		case evTooLarge:
			f := failure
			f.act |= actEndAttempt
			return f, nil
		case evReconnected:
			return step{next: stAwaiting, act: actEndAttempt | actPublish}, nil
		}
	case stReporting, stReportWait:
		switch ev {
		case evGone:
			return step{next: s, act: actStopLock}, nil
		case evLockLost:
			return step{next: stDone, act: actCancelEvent | actClose, settle: SettledDropped}, nil
		case evReconnected, evDeadline:
			return stay, nil
		}
		if s == stReportWait {
			switch ev {
			case evReportDue:
				return step{next: stReporting, act: actReport}, nil
			case evAbandon:
				return step{next: stReporting, act: actFinal | actReport}, nil
			}
			break
		}
		switch ev {
		case evReportDone:
			return step{next: stDone, act: actClose}, nil
		case evReportRefused:
			return step{next: stDone, act: actClose, settle: SettledDropped}, nil
		case evReportFailed:
			return step{next: stReportWait, act: actArmReportRetry}, nil
		case evAbandon:
			return step{next: stReporting, act: actFinal}, nil
		}
	}
	return reject()
}
