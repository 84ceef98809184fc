package emulator

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/pe-bridge/pe-bridge/engine"
)

// Socket.IO notifications, as the engine serves them to its own clients
// (API.md §2.7 b, the official client's Clients/Lib/SocketIoManager.js and
// Types/SocketSettings.js): Socket.IO v4, namespace "/api", path
// "<engine url path>/socket.io" (the emulator serves at the root, so
// "/socket.io"), the token in an "Authorization" header of the polling
// handshake, without "Bearer" (with "Bearer" is accepted too), as for REST.
// Every notification goes to every connected socket of the namespace, under
// the name engine.SocketEventName gives, with the EventMessage as its one argument.

// SocketPath is where the emulator serves Socket.IO (it serves the engine
// at the root).
const SocketPath = engine.SocketPath

// sockets is the emulator's Socket.IO server. Events are queued under the
// emulator's lock and emitted in order by one goroutine, so no emit runs
// with the lock held and none is dropped.
type sockets struct {
	srv     *socket.Server
	handler http.Handler
	nsp     socket.Namespace
	clients atomic.Int64 // len(conns), read without the lock

	connMu sync.Mutex
	conns  map[*socket.Socket]bool

	mu     sync.Mutex
	cond   *sync.Cond
	queue  []sioEvent
	closed bool
	done   chan struct{}
}

type sioEvent struct {
	name string
	msg  engine.EventMessage
}

func (e *Emulator) newSockets() *sockets {
	opts := socket.DefaultServerOptions()
	opts.SetPath(SocketPath)
	opts.SetServeClient(false)
	if e.cfg.SocketPingInterval > 0 {
		opts.SetPingInterval(e.cfg.SocketPingInterval)
		opts.SetPingTimeout(5 * time.Second)
	}
	s := &sockets{srv: socket.NewServer(nil, opts), done: make(chan struct{}), conns: map[*socket.Socket]bool{}}
	s.cond = sync.NewCond(&s.mu)
	s.handler = s.srv.ServeHandler(nil)
	s.nsp = s.srv.Of(engine.SocketNamespace, nil)
	s.nsp.Use(func(c *socket.Socket, next func(*socket.ExtendedError)) {
		id, err := e.authenticateToken(c.Handshake().Headers.Header().Get("Authorization"), false)
		if err == nil {
			err = checkScope(scopeNotify, id)
		}
		if err != nil {
			next(socket.NewExtendedError(err.Body.Message, map[string]any{"code": err.Status}))
			return
		}
		// Counted before the client learns it is connected, so no event
		// after its "connect" is dropped for want of listeners. (A socket
		// that fails after this point stays counted: events are then built
		// for nobody, which costs only time.)
		s.track(c, true)
		_ = c.On("disconnect", func(...any) { s.track(c, false) })
		next(nil)
	})
	go s.run()
	return s
}

// track adds or removes a socket (idempotent: the library may report one
// disconnect twice, e.g. a server disconnect and the transport close).
func (s *sockets) track(c *socket.Socket, on bool) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if on {
		s.conns[c] = true
	} else {
		delete(s.conns, c)
	}
	s.clients.Store(int64(len(s.conns)))
}

// active reports whether a socket is connected (then every event is built).
func (s *sockets) active() bool { return s.clients.Load() > 0 }

// enqueue queues one event for every connected socket.
func (s *sockets) enqueue(name string, m engine.EventMessage) {
	s.mu.Lock()
	if !s.closed {
		s.queue = append(s.queue, sioEvent{name, m})
		s.cond.Signal()
	}
	s.mu.Unlock()
}

func (s *sockets) run() {
	defer close(s.done)
	var batch []sioEvent
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closed {
			s.cond.Wait()
		}
		if s.closed {
			s.mu.Unlock()
			return
		}
		batch, s.queue = s.queue, batch[:0]
		s.mu.Unlock()
		for _, ev := range batch {
			_ = s.nsp.Emit(engine.SocketEventName(ev.name), socketPayload(ev))
		}
		clear(batch)
	}
}

// socketPayload is the argument of one emitted event: the EventMessage, or
// for deployments only {processDefinitionId} (API.md §2.7: deploy events
// carry processDefinitionId, a string or an array).
func socketPayload(ev sioEvent) any {
	switch ev.name {
	case "process_deployed", "process_undeployed":
		return map[string]any{"processDefinitionId": ev.msg.ProcessDefinitionID}
	}
	return ev.msg
}

// disconnectAll closes every socket (the clients see a transport close and
// reconnect).
func (s *sockets) disconnectAll() {
	s.connMu.Lock()
	list := make([]*socket.Socket, 0, len(s.conns))
	for c := range s.conns {
		list = append(list, c)
	}
	s.connMu.Unlock()
	for _, c := range list {
		c.Disconnect(true)
	}
}

func (s *sockets) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.cond.Signal()
	s.mu.Unlock()
	<-s.done
	s.srv.Close(nil)
}

// isSocketPath reports whether the request is for the Socket.IO endpoint.
func isSocketPath(p string) bool {
	return p == SocketPath || strings.HasPrefix(p, SocketPath+"/")
}

// DisconnectSockets closes every Socket.IO connection, as an engine restart
// or a network cut would; clients reconnect. For tests of reconnects.
func (e *Emulator) DisconnectSockets() { e.sio.disconnectAll() }

// SocketClients is the number of connected Socket.IO clients.
func (e *Emulator) SocketClients() int { return int(e.sio.clients.Load()) }
