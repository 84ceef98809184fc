package engine

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
)

// DecodeErrorForTest exposes decodeError to the external tests.
var DecodeErrorForTest = decodeError

// HandlerTransport is an in-memory http.RoundTripper that serves requests
// with the handler registered for their host, without sockets. Inside a
// testing/synctest bubble it lets fake time drive timeouts. Handlers must
// return when the request context is done.
type HandlerTransport map[string]http.Handler

// RoundTrip serves req in a goroutine and waits for it or for the request
// context.
func (t HandlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	h := t[req.URL.Host]
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	if h == nil {
		return nil, errors.New("handler transport: connection refused")
	}
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.RequestURI = req.URL.RequestURI()
	r.RemoteAddr = "192.0.2.1:1234"
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(rec, r)
	}()
	select {
	case <-done:
		res := rec.Result()
		res.Request = req
		return res, nil
	case <-req.Context().Done():
		<-done
		return nil, req.Context().Err()
	}
}
