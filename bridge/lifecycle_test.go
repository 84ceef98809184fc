package bridge

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// anyCond marks a row that holds whatever the task's facts are.
var anyCond = []cond{{false, false}, {false, true}, {true, false}, {true, true}}

var (
	single   = []cond{{true, false}, {true, true}}
	multi    = []cond{{false, false}, {false, true}}
	retries  = []cond{{false, true}, {true, true}}
	noBudget = []cond{{false, false}, {true, false}}
)

// wantRow is one accepted (state, event) pair of the life cycle for the
// facts in conds. Every pair that no row lists must be rejected.
type wantRow struct {
	s      taskState
	ev     lifeEvent
	conds  []cond
	next   taskState
	act    action
	settle Settlement
}

const reportFailure = actFreeSlot | actFailure | actReport

var lifeTable = func() []wantRow {
	rows := []wantRow{
		{stNew, evDeliver, anyCond, stAwaiting, actPublish, ""},
		{stNew, evInvalid, anyCond, stReporting, reportFailure, ""},

		{stAwaiting, evOutcome, anyCond, stReporting, actEndAttempt | actFreeSlot | actOutcome | actReport, ""},
		{stAwaiting, evFailed, retries, stBackoff, actEndAttempt | actArmRetry, ""},
		{stAwaiting, evFailed, noBudget, stReporting, actEndAttempt | reportFailure, ""},
		{stAwaiting, evNoResponders, single, stBackoff, actEndAttempt | actPause | actArmRetry, ""},
		{stAwaiting, evNoResponders, multi, stDone, actEndAttempt | actPause | actClose, SettledReleased},
		{stAwaiting, evTooLarge, anyCond, stReporting, actEndAttempt | reportFailure, ""},
		{stAwaiting, evReconnected, anyCond, stAwaiting, actEndAttempt | actPublish, ""},
		{stAwaiting, evDeadline, single, stReporting, actEndAttempt | reportFailure, ""},
		{stAwaiting, evDeadline, multi, stDone, actEndAttempt | actClose, SettledReleased},
		{stAwaiting, evAbandon, single, stReporting, actEndAttempt | reportFailure | actFinal, ""},
		{stAwaiting, evAbandon, multi, stDone, actEndAttempt | actClose, SettledReleased},
		{stAwaiting, evGone, anyCond, stDone, actEndAttempt | actCancelEvent | actClose, SettledCancelled},
		{stAwaiting, evLockLost, anyCond, stDone, actEndAttempt | actCancelEvent | actClose, SettledDropped},

		{stBackoff, evRetryDue, anyCond, stAwaiting, actPublish, ""},
		{stBackoff, evReconnected, anyCond, stBackoff, 0, ""},
		{stBackoff, evDeadline, single, stReporting, reportFailure, ""},
		{stBackoff, evDeadline, multi, stDone, actClose, SettledReleased},
		{stBackoff, evAbandon, single, stReporting, reportFailure | actFinal, ""},
		{stBackoff, evAbandon, multi, stDone, actClose, SettledReleased},
		{stBackoff, evGone, anyCond, stDone, actCancelEvent | actClose, SettledCancelled},
		{stBackoff, evLockLost, anyCond, stDone, actCancelEvent | actClose, SettledDropped},

		{stReporting, evReportDone, anyCond, stDone, actClose, ""},
		{stReporting, evReportRefused, anyCond, stDone, actClose, SettledDropped},
		{stReporting, evReportFailed, anyCond, stReportWait, actArmReportRetry, ""},
		{stReporting, evAbandon, anyCond, stReporting, actFinal, ""},
		{stReportWait, evReportDue, anyCond, stReporting, actReport, ""},
		{stReportWait, evAbandon, anyCond, stReporting, actFinal | actReport, ""},
	}
	for _, s := range []taskState{stReporting, stReportWait} {
		rows = append(rows,
			wantRow{s, evGone, anyCond, s, actStopLock, ""},
			wantRow{s, evLockLost, anyCond, stDone, actCancelEvent | actClose, SettledDropped},
			wantRow{s, evReconnected, anyCond, s, 0, ""},
			wantRow{s, evDeadline, anyCond, s, 0, ""})
	}
	for _, s := range []taskState{stAwaiting, stBackoff, stReporting, stReportWait} {
		rows = append(rows,
			wantRow{s, evRefetched, anyCond, s, actAdoptLock, ""},
			wantRow{s, evCutOff, anyCond, stDone, actEndAttempt | actClose, SettledReleased})
	}
	return rows
}()

// TestTransitionTable checks every (state, event) pair under every set of
// facts: listed pairs give the listed step, all others are rejected and
// keep the state.
func TestTransitionTable(t *testing.T) {
	accepted, rejected := 0, 0
	for s := taskState(0); s < numStates; s++ {
		for ev := lifeEvent(0); ev < numEvents; ev++ {
			for _, c := range anyCond {
				var want *wantRow
				for i := range lifeTable {
					r := &lifeTable[i]
					if r.s != s || r.ev != ev {
						continue
					}
					for _, rc := range r.conds {
						if rc == c {
							if want != nil {
								t.Fatalf("%s/%s %+v listed twice", s, ev, c)
							}
							want = r
						}
					}
				}
				got, err := transition(s, ev, c)
				name := fmt.Sprintf("%s + %s %+v", s, ev, c)
				if want == nil {
					rejected++
					if !errors.Is(err, errImpossible) || got.next != s || got.act != 0 {
						t.Errorf("%s: got %s [%s] err %v, want rejected", name, got.next, got.act, err)
					}
					continue
				}
				accepted++
				if err != nil || got.next != want.next || got.act != want.act || got.settle != want.settle {
					t.Errorf("%s: got %s [%s] %q err %v, want %s [%s] %q", name, got.next, got.act, got.settle, err,
						want.next, want.act, want.settle)
				}
			}
		}
	}
	if total := int(numStates) * int(numEvents) * len(anyCond); accepted+rejected != total {
		t.Fatalf("covered %d of %d combinations", accepted+rejected, total)
	}
	t.Logf("%d accepted and %d rejected (state, event, facts) combinations", accepted, rejected)
}

// Invariants of the table that any future row must keep.
func TestTransitionInvariants(t *testing.T) {
	for s := taskState(0); s < numStates; s++ {
		for ev := lifeEvent(0); ev < numEvents; ev++ {
			for _, c := range anyCond {
				st, err := transition(s, ev, c)
				if err != nil {
					continue
				}
				if s == stDone {
					t.Errorf("done accepts %s", ev)
				}
				if (st.next == stDone) != (st.act&actClose != 0) {
					t.Errorf("%s + %s: next %s with actions [%s]: done iff close", s, ev, st.next, st.act)
				}
				if s == stAwaiting && st.next != stAwaiting && st.act&actEndAttempt == 0 {
					t.Errorf("%s + %s leaves awaiting without ending the attempt", s, ev)
				}
				if st.act&actPublish != 0 && st.next != stAwaiting {
					t.Errorf("%s + %s publishes into %s", s, ev, st.next)
				}
				if st.act&actReport != 0 && st.next != stReporting {
					t.Errorf("%s + %s reports from %s", s, ev, st.next)
				}
				if st.next == stReporting && s != stReporting && st.act&actReport == 0 {
					t.Errorf("%s + %s enters reporting without a report", s, ev)
				}
			}
		}
	}
}

func TestStateAndEventNames(t *testing.T) {
	if len(stateNames) != int(numStates) || len(eventNames) != int(numEvents) || len(actionNames) != 14 {
		t.Fatal("name tables out of step with the constants")
	}
	if s := (actPublish | actClose).String(); s != "publish,close" {
		t.Fatal(s)
	}
}

func TestLockPolicy(t *testing.T) {
	lp := lockPolicy{lock: 30 * time.Second}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := lockCycle{expiry: t0.Add(30 * time.Second)}
	// The first call starts with two thirds of the lock left.
	if at, ok := lp.next(c); !ok || !at.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("first extension at %s", at.Sub(t0))
	}
	// Each call is bounded by the time the lock has left.
	s1 := t0.Add(10 * time.Second)
	if bound := lp.start(&c, s1); bound != 20*time.Second {
		t.Fatalf("bound %s", bound)
	}
	// While it is open (stalled or slow) another call starts every 3 s, up
	// to maxOpenExtends at once.
	at := s1
	for i := 2; i <= maxOpenExtends; i++ {
		next, ok := lp.next(c)
		if !ok || next.Sub(at) != 3*time.Second {
			t.Fatalf("call %d at +%s ok=%v", i, next.Sub(at), ok)
		}
		at = next
		if bound := lp.start(&c, at); bound != max(c.expiry.Sub(at), lp.retryEvery()) {
			t.Fatalf("call %d bound %s", i, bound)
		}
	}
	if _, ok := lp.next(c); ok {
		t.Fatal("more than maxOpenExtends calls open")
	}
	// A failed call frees its place; the next try keeps the rhythm.
	lp.ended(&c, s1, false)
	if next, ok := lp.next(c); !ok || next.Sub(at) != 3*time.Second || !c.pending {
		t.Fatalf("after a failure: %s ok=%v", next.Sub(at), ok)
	}
	// The first success ends the cycle: the lock runs from that call's start.
	s2 := s1.Add(3 * time.Second)
	lp.ended(&c, s2, true)
	if !c.expiry.Equal(s2.Add(30*time.Second)) || c.pending {
		t.Fatalf("after success: expiry %s pending %v", c.expiry.Sub(t0), c.pending)
	}
	if next, _ := lp.next(c); !next.Equal(s2.Add(10 * time.Second)) {
		t.Fatalf("next cycle at %s", next.Sub(t0))
	}
	// A late success of an older call never moves the expiry back.
	lp.ended(&c, s1, true)
	if !c.expiry.Equal(s2.Add(30 * time.Second)) {
		t.Fatalf("expiry moved back to %s", c.expiry.Sub(t0))
	}
	// After expiry a call is still bounded by one retry interval.
	if bound := lp.start(&c, c.expiry.Add(time.Minute)); bound != 3*time.Second {
		t.Fatalf("bound after expiry %s", bound)
	}
	// A re-fetch adopts the new lock.
	c = lockCycle{expiry: t0.Add(30 * time.Second), pending: true}
	lp.adopt(&c, t0.Add(40*time.Second))
	if !c.expiry.Equal(t0.Add(70*time.Second)) || c.pending {
		t.Fatalf("adopted %s pending %v", c.expiry.Sub(t0), c.pending)
	}
}

func TestLockPolicyReportTimeout(t *testing.T) {
	lp := lockPolicy{lock: 30 * time.Second}
	for n, want := range []time.Duration{2 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second} {
		if got := lp.reportTimeout(n); got != want {
			t.Errorf("try %d: %s, want %s", n, got, want)
		}
	}
	if got := (lockPolicy{lock: time.Second}).reportTimeout(0); got != time.Second {
		t.Errorf("short lock: %s", got)
	}
	if got := (lockPolicy{lock: time.Second}).retryEvery(); got != 100*time.Millisecond {
		t.Errorf("retry every %s", got)
	}
}
