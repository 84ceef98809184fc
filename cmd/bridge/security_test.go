package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
	"github.com/pe-bridge/pe-bridge/events"
)

// secureConf is the shipped permission model; the tests load it as is.
const secureConf = "../../deploy/nats/secure.conf"

// role is one identity of deploy/nats/secure.conf.
type role struct {
	name  string
	opts  []nats.Option // how it authenticates
	inbox string        // the inbox prefix of a client, set on every connection (open servers too)
}

// The clients' own inbox prefixes: secure.conf lets each subscribe to
// <prefix>.> only.
const (
	starterInbox  = "_INBOX_pe-starter"
	tasklistInbox = "_INBOX_pe-tasklist"
)

// secureEnv generates the credentials secure.conf reads from the
// environment: passwords for the users, nkeys for the handlers. env is
// what the nats-server process (here: the bridge with its embedded
// server) gets.
type secureEnv struct {
	env                          []string
	bridgePass                   string
	sample, credit               role // handlers (nkey)
	starter, tasklist, anonymous role // clients (password), nobody
	bridgeUser                   role
	all                          []role // every non-bridge role
}

func newSecureEnv(t *testing.T) *secureEnv {
	t.Helper()
	nkeyRole := func(name string) (role, string) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		file := filepath.Join(t.TempDir(), name+".nk")
		if err := os.WriteFile(file, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		opt, err := nats.NkeyOptionFromSeed(file)
		if err != nil {
			t.Fatal(err)
		}
		return role{name: name, opts: []nats.Option{opt}}, pub
	}
	e := &secureEnv{bridgePass: "bridge-pw-" + rand8(t)}
	var samplePub, creditPub string
	e.sample, samplePub = nkeyRole("handler SampleExternalTask (nkey)")
	e.credit, creditPub = nkeyRole("handler CheckCredit (nkey)")
	starterPass, tasklistPass := "starter-pw-"+rand8(t), "tasklist-pw-"+rand8(t)
	e.starter = role{name: "client pe-starter", opts: []nats.Option{nats.UserInfo("pe-starter", starterPass)}, inbox: starterInbox}
	e.tasklist = role{name: "client pe-tasklist", opts: []nats.Option{nats.UserInfo("pe-tasklist", tasklistPass)}, inbox: tasklistInbox}
	e.anonymous = role{name: "anonymous"}
	e.bridgeUser = role{name: "pe-bridge", opts: []nats.Option{nats.UserInfo("pe-bridge", e.bridgePass)}}
	e.all = []role{e.sample, e.credit, e.starter, e.tasklist}
	e.env = []string{
		"NATS_PE_BRIDGE_PASSWORD=" + e.bridgePass,
		"NATS_PE_HANDLER_SAMPLE_NKEY=" + samplePub,
		"NATS_PE_HANDLER_CREDIT_NKEY=" + creditPub,
		"NATS_PE_STARTER_PASSWORD=" + starterPass,
		"NATS_PE_TASKLIST_PASSWORD=" + tasklistPass,
	}
	return e
}

func rand8(t *testing.T) string {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return pub[1:9]
}

// attackEnv is a bridge (the real binary, bridge run) with its embedded
// nats-server, open (secure false: no --nats-config, as before this
// permission model) or loaded with deploy/nats/secure.conf, bridging
// SampleExternalTask of an in-test engine emulator.
type attackEnv struct {
	t      *testing.T
	secure bool
	url    string
	emu    *emulator.Emulator
	roles  *secureEnv
}

func startAttackEnv(t *testing.T, secure bool) *attackEnv {
	t.Helper()
	emu, engineURL := testEngine(t, emulator.Config{})
	a := &attackEnv{t: t, secure: secure, emu: emu, roles: newSecureEnv(t)}
	addr := freeAddr(t)
	args := []string{"run", "--engine-url", engineURL, "--nats-listen", addr, "--topics", "SampleExternalTask"}
	var env []string
	if secure {
		args = append(args, "--nats-config", secureConf, "--nats-user", "pe-bridge")
		env = append(a.roles.env, "PE_NATS_PASSWORD="+a.roles.bridgePass)
	}
	p := startBridge(t, env, args...)
	p.waitLine("bridge ready", 30*time.Second)
	a.url = "nats://" + addr
	return a
}

// conn connects as r (in the open setup every role is anonymous, with r's
// inbox prefix). The returned channel receives the connection's async
// errors (permission violations).
func (a *attackEnv) conn(r role) (*nats.Conn, <-chan error) {
	a.t.Helper()
	errs := make(chan error, 64)
	opts := []nats.Option{nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})}
	if a.secure {
		opts = append(opts, r.opts...)
	}
	if r.inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(r.inbox))
	}
	nc, err := nats.Connect(a.url, opts...)
	if err != nil {
		a.t.Fatalf("connecting as %s: %v", r.name, err)
	}
	a.t.Cleanup(nc.Close)
	return nc, errs
}

// handle serves pe.task.SampleExternalTask as the legitimate handler
// (queue group pe-handlers), answering {"genuine":true}.
func (a *attackEnv) handle() {
	a.t.Helper()
	nc, _ := a.conn(a.roles.sample)
	if _, err := nc.QueueSubscribe("pe.task.SampleExternalTask", events.DefaultQueueGroup, func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"genuine":true}`))
	}); err != nil {
		a.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		a.t.Fatal(err)
	}
}

// startAll starts n hello_world instances, waits for each to end, and
// counts those whose end token holds "forged".
func (a *attackEnv) startAll(n int) (forged int) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed error
	for range n {
		wg.Go(func() {
			resp, err := a.emu.Start(ctx, engine.ProcessStartRequest{ProcessModelID: "hello_world", ReturnOn: engine.ReturnOnFinished})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failed = err
			case strings.Contains(string(resp.TokenPayload), "forged"):
				forged++
			case !strings.Contains(string(resp.TokenPayload), "genuine"):
				failed = fmt.Errorf("end token %s is neither genuine nor forged", resp.TokenPayload)
			}
		})
	}
	wg.Wait()
	if failed != nil {
		a.t.Fatal(failed)
	}
	return forged
}

// permissionError waits for a permission violation on errs.
func permissionError(t *testing.T, who string, errs <-chan error) {
	t.Helper()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("%s: async error %v, want a permissions violation", who, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no permissions violation reported", who)
	}
}

// permissionErrorFor waits for a permission violation on errs whose text
// contains want (e.g. `Publish to "pe.usertask.list"`), skipping others.
func permissionErrorFor(t *testing.T, who string, errs <-chan error, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-errs:
			if strings.Contains(err.Error(), want) {
				return
			}
		case <-deadline:
			t.Fatalf("%s: no permissions violation with %s reported", who, want)
		}
	}
}

// TestAttackRogueTaskSubscriber: a client subscribing to pe.task.> (or to
// the bridge's reply inbox) gets every task and forges every result on an
// open server; with secure.conf its subscriptions are refused, it gets 0
// tasks, and the handler's genuine result finishes every task.
func TestAttackRogueTaskSubscriber(t *testing.T) {
	const n = 200
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secure=%v", secure), func(t *testing.T) {
			a := startAttackEnv(t, secure)
			rogues := a.roles.all[1:] // everyone but the SampleExternalTask handler
			if !secure {
				rogues = []role{a.roles.anonymous}
			}
			var mu sync.Mutex
			seen := map[string]bool{} // task ids the rogues received
			for _, r := range rogues {
				nc, errs := a.conn(r)
				for _, subj := range []string{"pe.task.>", "pe.task.SampleExternalTask", "_INBOX_pebridge.>", ">"} {
					if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
						if strings.HasPrefix(m.Subject, events.TaskPrefix) {
							mu.Lock()
							seen[m.Header.Get("ce-id")] = true
							mu.Unlock()
							_ = m.Respond([]byte(`{"forged":true}`))
						}
					}); err != nil {
						t.Fatal(err)
					}
					if err := nc.Flush(); err != nil {
						t.Fatal(err)
					}
					if secure {
						permissionError(t, r.name+" subscribing to "+subj, errs)
					}
				}
			}
			if secure {
				a.handle()
			}
			forged := a.startAll(n)
			mu.Lock()
			got := len(seen)
			mu.Unlock()
			t.Logf("secure=%v: rogue subscribers (%d identities) received %d of %d tasks, forged %d of %d results",
				secure, len(rogues), got, n, forged, n)
			if secure && (got != 0 || forged != 0) {
				t.Fatalf("rogues received %d tasks and forged %d of %d results", got, forged, n)
			}
			if !secure && forged != n {
				t.Fatalf("open server: %d of %d forged (the attack this model stops should work here)", forged, n)
			}
		})
	}
}

// TestAttackHandlerAnswersOtherTopic: a handler that learnt (or guessed)
// the reply subject of a task it did not receive answers it first: the
// CheckCredit handler on a SampleExternalTask task, and a second
// SampleExternalTask handler on a task its queue-group peer received. On an
// open server the forged result wins every time; with secure.conf
// (allow_responses) the reply is refused and the genuine one finishes
// every task.
func TestAttackHandlerAnswersOtherTopic(t *testing.T) {
	const n = 200
	for _, secure := range []bool{false, true} {
		for _, attackerRole := range []string{"other topic", "same topic, other queue member"} {
			t.Run(fmt.Sprintf("secure=%v/%s", secure, attackerRole), func(t *testing.T) {
				a := startAttackEnv(t, secure)
				r := a.roles.credit
				if attackerRole != "other topic" {
					r = a.roles.sample
				}
				attacker, errs := a.conn(r)
				victim, _ := a.conn(a.roles.sample)
				var refused atomic.Int64
				if _, err := victim.QueueSubscribe("pe.task.SampleExternalTask", events.DefaultQueueGroup, func(m *nats.Msg) {
					// The leak: the attacker knows this task's reply subject and answers first.
					_ = attacker.Publish(m.Reply, []byte(`{"forged":true}`))
					_ = attacker.Flush()
					if secure {
						select {
						case <-errs:
							refused.Add(1)
						case <-time.After(10 * time.Second):
						}
					}
					_ = m.Respond([]byte(`{"genuine":true}`))
				}); err != nil {
					t.Fatal(err)
				}
				if err := victim.Flush(); err != nil {
					t.Fatal(err)
				}
				forged := a.startAll(n)
				t.Logf("secure=%v: a handler (%s) forged %d of %d SampleExternalTask results whose reply subject it knew (%d replies refused)",
					secure, attackerRole, forged, n, refused.Load())
				if secure && (forged != 0 || refused.Load() != n) {
					t.Fatalf("forged %d of %d, %d refused", forged, n, refused.Load())
				}
				if !secure && forged != n {
					t.Fatalf("open server: %d of %d forged", forged, n)
				}
			})
		}
	}
}

// TestAttackQueueGroupImpostor: an impostor joining queue group pe-bridge
// on pe.process.start answers a share of the starts on an open server; with
// secure.conf nobody but the bridge can join pe-bridge (nor subscribe to a
// service subject at all), and the bridge answers 40 of 40.
func TestAttackQueueGroupImpostor(t *testing.T) {
	const n = 40
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secure=%v", secure), func(t *testing.T) {
			a := startAttackEnv(t, secure)
			impostors := a.roles.all
			if !secure {
				impostors = []role{a.roles.anonymous}
			}
			for _, r := range impostors {
				nc, errs := a.conn(r)
				if _, err := nc.QueueSubscribe(events.SubjectProcessStart, "pe-bridge", func(m *nats.Msg) {
					_ = m.Respond([]byte(`{"processInstanceId":"impostor","correlationId":"impostor"}`))
				}); err != nil {
					t.Fatal(err)
				}
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				if secure {
					permissionError(t, r.name+" joining pe-bridge", errs)
				}
			}
			client, _ := a.conn(a.roles.starter)
			impostor := 0
			for i := range n {
				msg, err := client.Request(events.SubjectProcessStart, []byte(`{"processModelId":"hello_world"}`), 10*time.Second)
				if err != nil {
					t.Fatalf("start %d: %v", i, err)
				}
				if strings.Contains(string(msg.Data), "impostor") {
					impostor++
				}
			}
			t.Logf("secure=%v: the impostor answered %d of %d pe.process.start requests", secure, impostor, n)
			if secure && impostor != 0 {
				t.Fatalf("impostor answered %d of %d", impostor, n)
			}
		})
	}
}

// TestAttackClientWithoutPermission: a client may request only the service
// subjects its role names: on an open server any client gets every
// endpoint; with secure.conf pe-starter cannot list or finish user tasks or
// terminate, and pe-tasklist cannot start processes or trigger signals.
func TestAttackClientWithoutPermission(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secure=%v", secure), func(t *testing.T) {
			a := startAttackEnv(t, secure)
			cases := []struct {
				who     role
				subject string
			}{
				{a.roles.starter, events.SubjectUserTaskList},
				{a.roles.starter, events.SubjectUserTaskFinish},
				{a.roles.starter, events.SubjectProcessTerminate},
				{a.roles.tasklist, events.SubjectProcessStart},
				{a.roles.tasklist, events.SubjectSignalTrigger},
				{a.roles.sample, events.SubjectProcessStart},
				{a.roles.sample, events.SubjectUserTaskList},
			}
			answered := 0
			for _, c := range cases {
				nc, errs := a.conn(c.who)
				if !secure {
					if _, err := nc.Request(c.subject, []byte(`{}`), 10*time.Second); err == nil {
						answered++
					}
					continue
				}
				// The server refuses the publish (the permission error says
				// so), so the request never reaches the bridge: no reply can come.
				inbox := nc.NewInbox() // the client's own prefix (handlers may subscribe to no inbox at all)
				sub, err := nc.SubscribeSync(inbox)
				if err != nil {
					t.Fatal(err)
				}
				if err := nc.PublishRequest(c.subject, inbox, []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
				permissionErrorFor(t, c.who.name+" requesting "+c.subject, errs, fmt.Sprintf("Publish to %q", c.subject))
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				if n, _, _ := sub.Pending(); n > 0 {
					answered++
				}
			}
			t.Logf("secure=%v: %d of %d requests outside the client's role were answered", secure, answered, len(cases))
			if secure && answered != 0 {
				t.Fatalf("%d of %d forbidden requests answered", answered, len(cases))
			}
			if !secure && answered != len(cases) {
				t.Fatalf("open server answered %d of %d", answered, len(cases))
			}
			if secure {
				// What the roles allow still works: pe-tasklist sees a user task
				// waiting, lists it, and reads no other event.
				nc, errs := a.conn(a.roles.tasklist)
				waiting, err := nc.SubscribeSync(events.EventPrefix + "user_task_waiting")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := nc.SubscribeSync(events.EventPrefix + "process_started"); err != nil {
					t.Fatal(err)
				}
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				permissionError(t, "pe-tasklist on process_started", errs)
				if _, err := a.emu.Start(context.Background(), engine.ProcessStartRequest{ProcessModelID: "approval",
					InitialToken: json.RawMessage(`{"amount":5000}`)}); err != nil {
					t.Fatal(err)
				}
				if _, err := waiting.NextMsg(20 * time.Second); err != nil {
					t.Fatalf("pe-tasklist: no user_task_waiting event: %v", err)
				}
				msg, err := nc.Request(events.SubjectUserTaskList, []byte(`{}`), 10*time.Second)
				if err != nil || msg.Header.Get("Nats-Service-Error-Code") != "" {
					t.Fatalf("pe-tasklist listing user tasks: %v %v", err, msg)
				}
				var l struct{ TotalCount int }
				if err := json.Unmarshal(msg.Data, &l); err != nil || l.TotalCount != 1 {
					t.Fatalf("list reply %s", msg.Data)
				}
				nc, _ = a.conn(a.roles.starter)
				if _, err := nc.Request("$SRV.INFO."+events.ServiceName, nil, 10*time.Second); err != nil {
					t.Fatalf("pe-starter asking $SRV.INFO: %v", err)
				}
			}
		})
	}
}

// TestAttackClientReadsOtherReplies: a client subscribing to "_INBOX.>"
// (nats.go's default inbox prefix) and to another client's inbox prefix
// reads that client's replies on an open server, as it did when
// secure.conf gave every client "_INBOX.>". With secure.conf each client
// may subscribe to its own prefix only: pe-starter's snooping subscriptions
// are refused and it reads none of pe-tasklist's replies, while both
// clients' own requests are answered. A client that keeps the default
// prefix gets no reply at all (its inbox subscription is refused).
func TestAttackClientReadsOtherReplies(t *testing.T) {
	const n = 50
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secure=%v", secure), func(t *testing.T) {
			a := startAttackEnv(t, secure)
			snoop, errs := a.conn(a.roles.starter)
			// Channel subscriptions: the connection's reader queues each message
			// before it reads the next, so len(snooped) is exact once a later
			// reply on the same connection has arrived.
			snooped := make(chan *nats.Msg, 4*n)
			for _, subj := range []string{"_INBOX.>", tasklistInbox + ".>"} {
				if _, err := snoop.ChanSubscribe(subj, snooped); err != nil {
					t.Fatal(err)
				}
				if err := snoop.Flush(); err != nil {
					t.Fatal(err)
				}
				if secure {
					permissionErrorFor(t, "pe-starter subscribing to "+subj, errs, fmt.Sprintf("Subscription to %q", subj))
				}
			}
			victim, _ := a.conn(a.roles.tasklist)
			for i := range n {
				msg, err := victim.Request(events.SubjectUserTaskList, []byte(`{}`), 10*time.Second)
				if err != nil || msg.Header.Get("Nats-Service-Error-Code") != "" {
					t.Fatalf("pe-tasklist request %d: %v %v", i, err, msg)
				}
				if !strings.HasPrefix(msg.Subject, tasklistInbox+".") {
					t.Fatalf("pe-tasklist reply on %s, want its prefix %s", msg.Subject, tasklistInbox)
				}
			}
			// The snooper's own request works, and its reply, sent after every
			// reply to the victim, arrives after any copy the snooper got.
			msg, err := snoop.Request(events.SubjectProcessStart, []byte(`{"processModelId":"hello_world"}`), 10*time.Second)
			if err != nil || !strings.Contains(string(msg.Data), "processInstanceId") {
				t.Fatalf("pe-starter's own start: %v %v", err, msg)
			}
			got := len(snooped)
			t.Logf("secure=%v: pe-starter read %d of %d replies to pe-tasklist", secure, got, n)
			if secure && got != 0 {
				t.Fatalf("pe-starter read %d of %d replies to pe-tasklist", got, n)
			}
			if !secure && got != n {
				t.Fatalf("open server: pe-starter read %d of %d (the attack this model stops should work here)", got, n)
			}
			if secure {
				// The default prefix is refused too: pe-starter without its
				// prefix gets no reply, though its start runs (the publish is
				// allowed).
				before := a.emu.Stats().InstancesStarted
				def, errs := a.conn(role{name: "pe-starter, default inbox", opts: a.roles.starter.opts})
				if _, err := def.Request(events.SubjectProcessStart, []byte(`{"processModelId":"hello_world"}`), 2*time.Second); err == nil {
					t.Fatal("pe-starter with the default inbox prefix got a reply")
				} else {
					t.Logf("pe-starter with the default inbox prefix: %v", err)
				}
				permissionErrorFor(t, "pe-starter on _INBOX", errs, `Subscription to "_INBOX.`)
				eventually(t, 10*time.Second, func() error {
					if got := a.emu.Stats().InstancesStarted; got != before+1 {
						return fmt.Errorf("%d instances started by the refused-inbox request, want 1", got-before)
					}
					return nil
				})
			}
		})
	}
}

// TestSecureConfNeedsCredentials: the embedded server refuses clients
// without credentials, a wrong password and an unknown nkey, and the
// bridge's own connection uses the inbox prefix the model grants it.
func TestSecureConfNeedsCredentials(t *testing.T) {
	a := startAttackEnv(t, true)
	for _, opts := range [][]nats.Option{
		nil,
		{nats.UserInfo("pe-bridge", "wrong")},
		{nats.UserInfo("pe-starter", a.roles.bridgePass)},
	} {
		if nc, err := nats.Connect(a.url, append(opts, nats.Timeout(5*time.Second), nats.NoReconnect())...); err == nil {
			nc.Close()
			t.Fatalf("connected with %d options", len(opts))
		}
	}
	other := newSecureEnv(t).sample // an nkey secure.conf does not know
	if nc, err := nats.Connect(a.url, append(other.opts, nats.Timeout(5*time.Second))...); err == nil {
		nc.Close()
		t.Fatal("unknown nkey accepted")
	}
	// The bridge user itself, with the default inbox prefix, could not read its replies.
	nc, errs := a.conn(a.roles.bridgeUser)
	if _, err := nc.SubscribeSync(nats.NewInbox()); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	permissionError(t, "pe-bridge on _INBOX.>", errs)
}

// TestDevWithSecureConf: bridge dev loads the shipped model too, and the
// roles it grants work end to end: a handler (nkey) serves the sample
// topic, a client (pe-starter) runs a blocking start through the service.
func TestDevWithSecureConf(t *testing.T) {
	roles := newSecureEnv(t)
	addr := freeAddr(t)
	p := startBridge(t, append(roles.env, "PE_NATS_PASSWORD="+roles.bridgePass),
		"dev", "--nats-config", secureConf, "--nats-user", "pe-bridge", "--nats-listen", addr, "--engine-addr", "127.0.0.1:0")
	p.waitLine("bridge ready", 30*time.Second)
	a := &attackEnv{t: t, secure: true, url: "nats://" + addr, roles: roles}
	a.handle()
	nc, _ := a.conn(roles.starter)
	msg, err := nc.Request(events.SubjectProcessStart, []byte(`{"processModelId":"hello_world","returnOn":"finished"}`), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msg.Data), "genuine") {
		t.Fatalf("start reply %s %v", msg.Data, msg.Header)
	}
}
