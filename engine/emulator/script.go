package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/dop251/goja"
)

// scriptTimeout bounds one expression evaluation (the engine's
// runtimeExpressions.timeoutInMiliseconds).
const scriptTimeout = time.Second

// scripts evaluates the JS expressions of a model with goja. Compiled
// programs are cached per source; runtimes are pooled because a goja
// runtime is not goroutine-safe.
type scripts struct {
	mu    sync.Mutex
	progs map[string]*goja.Program
	pool  sync.Pool
}

func newScripts() *scripts {
	s := &scripts{progs: map[string]*goja.Program{}}
	s.pool.New = func() any { return goja.New() }
	return s
}

// wrap turns an engine expression into a function over token and identity.
// Expressions are evaluated like the engine does (`return <expression>`);
// script task bodies are used as the function body.
func wrap(src string, body bool) string {
	if body {
		return "(function(token, identity) {\n" + src + "\n})"
	}
	return "(function(token, identity) { return " + strings.TrimSpace(src) + "\n})"
}

func (s *scripts) compile(src string, body bool) (*goja.Program, error) {
	key := src
	if body {
		key = "\x00body\x00" + src
	}
	s.mu.Lock()
	p, ok := s.progs[key]
	s.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err := goja.Compile("", wrap(src, body), true)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.progs[key] = p
	s.mu.Unlock()
	return p, nil
}

// tokenView is what expressions see as `token`.
type tokenView struct {
	current json.RawMessage
	history []histEntry
}

func decodeAny(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	if err := d.Decode(&v); err != nil {
		return nil
	}
	return v
}

func (t tokenView) value() map[string]any {
	hist := make(map[string]any, len(t.history))
	for _, h := range t.history {
		hist[h.id] = decodeAny(h.val)
	}
	return map[string]any{"current": decodeAny(t.current), "history": hist}
}

// eval runs src and returns its result as JSON and as a goja value's truthiness.
func (s *scripts) eval(src string, body bool, tok tokenView, userID string) (json.RawMessage, bool, error) {
	prog, err := s.compile(src, body)
	if err != nil {
		return nil, false, err
	}
	vm := s.pool.Get().(*goja.Runtime)
	timer := time.AfterFunc(scriptTimeout, func() { vm.Interrupt("expression timed out") })
	defer func() {
		timer.Stop()
		vm.ClearInterrupt()
		s.pool.Put(vm)
	}()
	var out json.RawMessage
	var truthy bool
	err = func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("evaluating expression: %v", r)
			}
		}()
		fv, err := vm.RunProgram(prog)
		if err != nil {
			return err
		}
		fn, ok := goja.AssertFunction(fv)
		if !ok {
			return errors.New("expression did not compile to a function")
		}
		res, err := fn(goja.Undefined(), vm.ToValue(tok.value()), vm.ToValue(map[string]any{"userId": userID}))
		if err != nil {
			return err
		}
		truthy = res.ToBoolean()
		if goja.IsUndefined(res) || goja.IsNull(res) {
			out = json.RawMessage("null")
			return nil
		}
		out = marshalJS(res.Export())
		return nil
	}()
	if err != nil {
		return nil, false, err
	}
	return out, truthy, nil
}

func marshalJS(v any) json.RawMessage {
	if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
		return json.RawMessage("null")
	}
	b, err := marshalCompact(v)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// marshalCompact encodes v like JSON.stringify would (no HTML escaping).
func marshalCompact(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return json.RawMessage(b[:len(b)-1]), nil
}
