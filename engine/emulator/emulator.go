package emulator

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/emulator/bpmn"
)

// Identity is who a bearer token stands for.
type Identity struct {
	UserID string
	Scopes []string
}

// Scopes the emulator checks ([V] API.md §1.3).
const (
	ScopeETW      = "engine_etw"
	ScopeRead     = "engine_read"
	ScopeWrite    = "engine_write"
	ScopeObserver = "engine_observer"
)

// Config configures an Emulator. The zero value is a development emulator
// that accepts the dummy token.
type Config struct {
	// DenyAnonymous refuses the dummy token ZHVtbXlfdG9rZW4=. Zero: the dummy
	// token is accepted and grants every scope (anonymous root access).
	DenyAnonymous bool
	// Verify checks any other bearer token. Nil: only the dummy token is
	// accepted. An error answers 401 UnauthorizedError with the error's text
	// (so a verifier saying "token expired" makes the message contain "expired").
	Verify func(token string) (Identity, error)
	// AuthorityURL is reported by GET /authority and /info.
	// Zero: "http://localhost:11560/".
	AuthorityURL string
	// MaxBodyBytes caps request bodies; larger bodies get 413. Zero: 8 MiB.
	MaxBodyBytes int64
	// NotificationTimeout caps how long GET /notifications/long_polling/* is
	// held without an event; then it answers 204 No Content. Zero: 60s.
	NotificationTimeout time.Duration
	// SocketPingInterval is the Engine.IO ping interval of the Socket.IO
	// notifications; the ping timeout stays at 5s, so a short interval in a
	// test on a loaded machine does not end connections. Zero: the
	// library's 25s ping interval and 20s timeout.
	SocketPingInterval time.Duration
	// MaxLongPoll caps the longPollingTimeout of fetch_and_lock. Zero: 5 min.
	MaxLongPoll time.Duration
	// RetainFinished is how many finished (or failed, terminated) instances
	// are kept for queries; older ones are forgotten with their flow node
	// instances and tasks (worker calls on those then get 404, not 409).
	// Zero: 100,000. Negative: keep all.
	RetainFinished int
	// Logger receives debug logs. Nil: discard.
	Logger *slog.Logger
}

// Validate reports an invalid Config.
func (c Config) Validate() error {
	if c.MaxBodyBytes < 0 {
		return errors.New("emulator: MaxBodyBytes must not be negative")
	}
	if c.NotificationTimeout < 0 {
		return errors.New("emulator: NotificationTimeout must not be negative")
	}
	if c.SocketPingInterval < 0 {
		return errors.New("emulator: SocketPingInterval must not be negative")
	}
	if c.MaxLongPoll < 0 {
		return errors.New("emulator: MaxLongPoll must not be negative")
	}
	if c.DenyAnonymous && c.Verify == nil {
		return errors.New("emulator: DenyAnonymous without Verify accepts no token at all")
	}
	return nil
}

func (c *Config) defaults() {
	if c.AuthorityURL == "" {
		c.AuthorityURL = "http://localhost:11560/"
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 8 << 20
	}
	if c.NotificationTimeout == 0 {
		c.NotificationTimeout = 60 * time.Second
	}
	if c.MaxLongPoll == 0 {
		c.MaxLongPoll = 5 * time.Minute
	}
	if c.RetainFinished == 0 {
		c.RetainFinished = 100_000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Emulator is an in-memory emulator of the ProcessCube engine REST API, for
// development and tests. It is an http.Handler serving /atlas_engine/api/v1.
type Emulator struct {
	cfg     Config
	log     *slog.Logger
	debug   bool // log at debug level (checked once; logging is on hot paths)
	scripts *scripts
	routes  []route

	mu           sync.Mutex
	closed       bool
	closedFlag   atomic.Bool
	closing      chan struct{}
	models       map[string]*model
	modelList    []*model // deployment order
	instances    map[string]*instance
	instList     []*instance
	tasks        map[string]*extTask
	fnis         map[string]*fni
	fniList      []*fni
	userFNIs     []*fni
	topics       map[string]*topicQueue
	msgSubs      map[string][]*sub
	sigSubs      map[string][]*sub
	notify       map[string][]chan engine.EventMessage
	sio          *sockets
	timers       timerHeap
	timer        *time.Timer
	timerAt      time.Time
	calls        map[string]int // guarded by statsMu
	calls4       [4]CallStats   // fetch, extend, finish, error; guarded by statsMu
	openTasks    int
	retired      []*instance // finished instances, oldest first
	deliverDepth int
	stats        Stats

	idRnd *rand.ChaCha8

	statsMu sync.Mutex // guards calls and the call counters of stats
	faultMu sync.Mutex
	faults  *faultState
}

type model struct {
	proc       *bpmn.Process
	hash       string
	deployedAt time.Time
}

// New builds an emulator with no models deployed.
func New(cfg Config) (*Emulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	e := &Emulator{
		cfg:       cfg,
		log:       cfg.Logger,
		scripts:   newScripts(),
		closing:   make(chan struct{}),
		models:    map[string]*model{},
		instances: map[string]*instance{},
		tasks:     map[string]*extTask{},
		fnis:      map[string]*fni{},
		topics:    map[string]*topicQueue{},
		msgSubs:   map[string][]*sub{},
		sigSubs:   map[string][]*sub{},
		notify:    map[string][]chan engine.EventMessage{},
		calls:     map[string]int{},
	}
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("emulator: seeding ids: %w", err)
	}
	e.idRnd = rand.NewChaCha8(seed)
	e.routes = e.buildRoutes()
	e.sio = e.newSockets()
	e.debug = cfg.Logger.Enabled(context.Background(), slog.LevelDebug)
	return e, nil
}

// Close stops timers and releases every held long poll and start waiter.
// It is idempotent. The emulator answers 503 afterwards.
func (e *Emulator) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	defer e.sio.close()
	e.closed = true
	e.closedFlag.Store(true)
	close(e.closing)
	if e.timer != nil {
		e.timer.Stop()
	}
	return nil
}

// Deploy parses a BPMN document and deploys every process in it, replacing
// models with the same id (running instances keep their old model). It
// returns the process model ids. Invalid BPMN yields a *bpmn.ElementError
// naming the element and the reason.
func (e *Emulator) Deploy(xml []byte) ([]string, error) {
	return e.deploy([][]byte{xml}, true)
}

func (e *Emulator) deploy(docs [][]byte, overwrite bool) ([]string, error) {
	type parsed struct {
		defs *bpmn.Definitions
		hash string
	}
	var all []parsed
	for _, doc := range docs {
		defs, err := bpmn.Parse(doc)
		if err != nil {
			return nil, err
		}
		if err := e.checkScripts(defs); err != nil {
			return nil, err
		}
		sum := sha256.Sum256(doc)
		all = append(all, parsed{defs, hex.EncodeToString(sum[:])})
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !overwrite {
		for _, p := range all {
			for _, proc := range p.defs.Processes {
				if _, ok := e.models[proc.ID]; ok {
					return nil, &conflictError{fmt.Sprintf("Process model %q already exists and overwriteExisting is false.", proc.ID)}
				}
			}
		}
	}
	var ids []string
	now := time.Now().UTC()
	for _, p := range all {
		for _, proc := range p.defs.Processes {
			m := &model{proc: proc, hash: p.hash, deployedAt: now}
			if old, ok := e.models[proc.ID]; ok {
				for i, lm := range e.modelList {
					if lm == old {
						e.modelList = append(e.modelList[:i], e.modelList[i+1:]...)
						break
					}
				}
			}
			e.models[proc.ID] = m
			e.modelList = append(e.modelList, m)
			ids = append(ids, proc.ID)
		}
		if e.wants("process_deployed") {
			e.emitMsg("process_deployed", engine.EventMessage{ProcessDefinitionID: p.defs.ID, CurrentToken: nullJSON})
		}
	}
	e.log.Debug("deployed process models", "process_model_ids", ids)
	return ids, nil
}

type conflictError struct{ msg string }

func (c *conflictError) Error() string { return "emulator: " + c.msg }

// checkScripts compiles every expression of defs so that syntax errors are
// reported at deploy time with the element id.
func (e *Emulator) checkScripts(defs *bpmn.Definitions) error {
	for _, p := range defs.Processes {
		for _, n := range p.Nodes {
			if n.Payload != "" {
				if _, err := e.scripts.compile(n.Payload, false); err != nil {
					return &bpmn.ElementError{ElementID: n.ID, Reason: "payload expression: " + err.Error()}
				}
			}
			if n.Kind == bpmn.KindScriptTask && n.Script != "" {
				if _, err := e.scripts.compile(n.Script, true); err != nil {
					return &bpmn.ElementError{ElementID: n.ID, Reason: "script: " + err.Error()}
				}
			}
			for _, f := range n.Outgoing {
				if f.Condition != "" {
					if _, err := e.scripts.compile(f.Condition, false); err != nil {
						return &bpmn.ElementError{ElementID: f.ID, Reason: "condition expression: " + err.Error()}
					}
				}
			}
		}
	}
	return nil
}

// LoadDir deploys every *.bpmn file of dir.
func (e *Emulator) LoadDir(dir string) ([]string, error) {
	return e.LoadFS(os.DirFS(dir))
}

// LoadFS deploys every *.bpmn file at the top of fsys, in name order.
func (e *Emulator) LoadFS(fsys fs.FS) ([]string, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("emulator: reading model directory: %w", err)
	}
	var names []string
	for _, de := range entries {
		if !de.IsDir() && strings.EqualFold(path.Ext(de.Name()), ".bpmn") {
			names = append(names, de.Name())
		}
	}
	sort.Strings(names)
	var ids []string
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return ids, fmt.Errorf("emulator: reading %s: %w", n, err)
		}
		got, err := e.Deploy(b)
		if err != nil {
			return ids, fmt.Errorf("emulator: deploying %s: %w", n, err)
		}
		ids = append(ids, got...)
	}
	return ids, nil
}

// Start starts a process instance with the same semantics as
// POST /process_models/{id}/start, as the dummy (root) identity. With
// ReturnOn 2 or 3 it blocks until the instance reaches an end event or ctx is
// done. Errors are *engine.Error values carrying the HTTP status the REST
// route would answer.
func (e *Emulator) Start(ctx context.Context, req engine.ProcessStartRequest) (engine.ProcessStartResponse, error) {
	return e.start(ctx, req, Identity{UserID: engine.DummyUserID}, true)
}

// ProcessInstance returns one process instance.
func (e *Emulator) ProcessInstance(id string) (engine.ProcessInstance, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.instances[id]
	if !ok {
		return engine.ProcessInstance{}, false
	}
	return in.view(), true
}

// CallStats counts calls of one kind by answer.
type CallStats struct {
	Total     int64 // every call received
	Status2xx int64
	Status4xx int64
	Status5xx int64
	NoAnswer  int64 // dropped or stalled by fault injection, or client gone
}

// Stats are the emulator's counters.
type Stats struct {
	Fetch, Extend, Finish, Error CallStats

	TasksCreated  int64
	TasksLocked   int64 // locks handed out by fetch_and_lock
	TasksFinished int64 // finished or errored by a worker
	TasksExpired  int64 // single-try expiries
	TasksUnlocked int64 // multi-try lock expiries
	TasksCanceled int64 // closed by boundary events or termination

	InstancesStarted    int64
	InstancesFinished   int64
	InstancesErrored    int64
	InstancesTerminated int64

	PendingTasks int // external tasks currently open
}

// Stats returns a snapshot of the counters.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	s := e.stats
	s.PendingTasks = e.openTasks
	e.mu.Unlock()
	e.statsMu.Lock()
	s.Fetch, s.Extend, s.Finish, s.Error = e.calls4[0], e.calls4[1], e.calls4[2], e.calls4[3]
	e.statsMu.Unlock()
	return s
}

// TaskCalls counts every finish and error call received for taskID, whatever
// the answer (faults included).
func (e *Emulator) TaskCalls(taskID string) int {
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	return e.calls[taskID]
}
