package telemetry

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pe-bridge/pe-bridge/bridge"
)

// Namespace prefixes every metric of the bridge.
const Namespace = "pe_bridge"

// Buckets of the duration histograms, in seconds: from 1 ms (a handler on
// loopback) to 5 min (the default handler timeout).
var (
	handlerBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
	engineBuckets  = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
)

// Metrics are the bridge's Prometheus metrics on a registry of their own
// (never the global one). It implements bridge.Observer, service.Observer,
// forwarder.Observer and engine.CallObserver; every method is safe for
// concurrent use and does not block. A nil *Metrics is not usable; leave the
// hooks nil instead.
type Metrics struct {
	reg          *prometheus.Registry
	beforeScrape atomic.Pointer[func()]

	fetched        *prometheus.CounterVec
	published      *prometheus.CounterVec
	settled        *prometheus.CounterVec
	handlerSeconds *prometheus.HistogramVec
	taskSeconds    *prometheus.HistogramVec
	inFlight       *prometheus.GaugeVec
	window         *prometheus.GaugeVec
	extensions     *prometheus.CounterVec
	extensionFails *prometheus.CounterVec
	pauses         *prometheus.CounterVec
	lostAcks       *prometheus.CounterVec

	engineSeconds *prometheus.HistogramVec

	forwarded *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	gaps      prometheus.Counter

	requests       *prometheus.CounterVec
	requestSeconds *prometheus.HistogramVec

	ready *prometheus.GaugeVec

	// topics and routes cache the children of the hot paths, so they do no
	// label hashing: topic → *topicMetrics, route → *routeMetrics.
	topics sync.Map
	routes sync.Map
}

// settlements are the outcomes a topic's series are created for up front.
var settlements = [...]bridge.Settlement{bridge.SettledFinished, bridge.SettledBPMNError, bridge.SettledFailure,
	bridge.SettledCancelled, bridge.SettledDropped, bridge.SettledReleased}

func settlementIndex(s bridge.Settlement) int {
	for i, v := range settlements {
		if v == s {
			return i
		}
	}
	return -1
}

type topicMetrics struct {
	fetched, published, extensions, extensionFails, pauses, lostAcks prometheus.Counter
	handlerSeconds                                                   prometheus.Observer
	inFlight, window                                                 prometheus.Gauge
	settled                                                          [len(settlements)]prometheus.Counter
	taskSeconds                                                      [len(settlements)]prometheus.Observer
}

// statusClasses index routeMetrics.
var statusClasses = [...]string{"error", "1xx", "2xx", "3xx", "4xx", "5xx"}

type routeMetrics struct {
	method, route string
	byClass       [len(statusClasses)]atomic.Pointer[prometheus.Observer]
}

// NewMetrics registers the bridge's metrics, the Go runtime's and the
// process's on a new registry. version is reported by pe_bridge_build_info.
func NewMetrics(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	f := factory{m.reg}
	m.fetched = f.counter("tasks_fetched_total", "Tasks locked by fetch_and_lock, by engine topic.", "topic")
	m.published = f.counter("tasks_published_total", "Task attempts published on pe.task.<topic> (retries count again).", "topic")
	m.settled = f.counter("tasks_settled_total", "Tasks whose life in the bridge ended, by topic and outcome (finished, bpmn_error, failure, cancelled, dropped, released).", "topic", "outcome")
	m.handlerSeconds = f.histogram("handler_duration_seconds", "Time from publishing a task attempt to the handler's reply.", handlerBuckets, "topic")
	m.taskSeconds = f.histogram("task_duration_seconds", "Time from fetching a task to its settlement (for finished and bpmn_error: the engine accepted the outcome).", handlerBuckets, "topic", "outcome")
	m.inFlight = f.gauge("tasks_in_flight", "Tasks of the topic held by handlers (published, outcome not yet in).", "topic")
	m.window = f.gauge("task_window_size", "Window of the topic: the most tasks held by handlers at once (--window); tasks_in_flight / task_window_size is the window use.", "topic")
	m.extensions = f.counter("lock_extensions_total", "extend_lock calls that succeeded.", "topic")
	m.extensionFails = f.counter("lock_extension_failures_total", "extend_lock calls that failed (the task may be lost to another worker).", "topic")
	m.lostAcks = f.counter("lost_acknowledgements_total", "Finish and error calls that got no clear answer (timeout, 5xx, no answer) and whose retry found the task closed: counted as reported, the earlier call most likely took effect.", "topic")
	m.pauses = f.counter("topic_pauses_total", "Times a topic paused fetching because no handler listened on pe.task.<topic> (no responders).", "topic")
	m.engineSeconds = f.histogram("engine_request_duration_seconds", "Engine REST calls by method, route template and status class (2xx, 4xx, 5xx, error = no answer); long polls (fetch_and_lock, notifications) last up to their timeout.", engineBuckets, "method", "route", "status_class")
	m.forwarded = f.counter("events_forwarded_total", "Engine events published on pe.event.<event>.", "event")
	m.dropped = f.counter("events_dropped_total", "Engine events that could not be forwarded, by reason.", "event", "reason")
	m.gaps = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "event_feed_gaps_total",
		Help: "Interruptions of the engine event feed (events may be missing; consumers are told on NATS)."})
	m.reg.MustRegister(m.gaps)
	m.requests = f.counter("service_requests_total", "Requests answered by the pe-bridge micro service, by endpoint and code (200, or the Nats-Service-Error-Code).", "endpoint", "code")
	m.requestSeconds = f.histogram("service_request_duration_seconds", "Time to answer a service request, by endpoint.", handlerBuckets, "endpoint")
	m.ready = f.gauge("ready", "1 when the readiness check passes, by check (nats, engine, topics, service, events; all = every check).", "check")
	bi := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info",
		Help: "Always 1; the labels name the running build."}, []string{"version"})
	m.reg.MustRegister(bi)
	bi.WithLabelValues(version).Set(1)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f factory) gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f factory) histogram(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(v)
	return v
}

// Registry is the registry the metrics are on, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text (or OpenMetrics) format.
// A scrape never blocks on the bridge: every value is read from memory.
func (m *Metrics) Handler() http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, Timeout: 10 * time.Second})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := m.beforeScrape.Load(); f != nil {
			(*f)()
		}
		h.ServeHTTP(w, r)
	})
}

// BeforeScrape makes every scrape call f first (the readiness checks set
// pe_bridge_ready from it, so the gauge is current without a probe).
func (m *Metrics) BeforeScrape(f func()) { m.beforeScrape.Store(&f) }

func (m *Metrics) topic(t string) *topicMetrics {
	if v, ok := m.topics.Load(t); ok {
		return v.(*topicMetrics)
	}
	tm := &topicMetrics{
		fetched:        m.fetched.WithLabelValues(t),
		published:      m.published.WithLabelValues(t),
		extensions:     m.extensions.WithLabelValues(t),
		extensionFails: m.extensionFails.WithLabelValues(t),
		pauses:         m.pauses.WithLabelValues(t),
		lostAcks:       m.lostAcks.WithLabelValues(t),
		handlerSeconds: m.handlerSeconds.WithLabelValues(t),
		inFlight:       m.inFlight.WithLabelValues(t),
		window:         m.window.WithLabelValues(t),
	}
	for i, st := range settlements {
		tm.settled[i] = m.settled.WithLabelValues(t, string(st))
		tm.taskSeconds[i] = m.taskSeconds.WithLabelValues(t, string(st))
	}
	v, _ := m.topics.LoadOrStore(t, tm)
	return v.(*topicMetrics)
}

// ---- bridge.Observer ------------------------------------------------------

// TaskFetched implements bridge.Observer.
func (m *Metrics) TaskFetched(topic string) { m.topic(topic).fetched.Inc() }

// TaskPublished implements bridge.Observer.
func (m *Metrics) TaskPublished(topic string) { m.topic(topic).published.Inc() }

// HandlerReplied implements bridge.Observer.
func (m *Metrics) HandlerReplied(topic string, d time.Duration) {
	m.topic(topic).handlerSeconds.Observe(d.Seconds())
}

// TaskSettled implements bridge.Observer.
func (m *Metrics) TaskSettled(topic string, s bridge.Settlement, d time.Duration) {
	if i := settlementIndex(s); i >= 0 {
		tm := m.topic(topic)
		tm.settled[i].Inc()
		tm.taskSeconds[i].Observe(d.Seconds())
		return
	}
	m.settled.WithLabelValues(topic, string(s)).Inc()
	m.taskSeconds.WithLabelValues(topic, string(s)).Observe(d.Seconds())
}

// LockExtended implements bridge.Observer.
func (m *Metrics) LockExtended(topic string, err error) {
	if err != nil {
		m.topic(topic).extensionFails.Inc()
		return
	}
	m.topic(topic).extensions.Inc()
}

// TopicPaused implements bridge.Observer.
func (m *Metrics) TopicPaused(topic string) { m.topic(topic).pauses.Inc() }

// AckLost implements bridge.Observer.
func (m *Metrics) AckLost(topic string) { m.topic(topic).lostAcks.Inc() }

// Window implements bridge.Observer.
func (m *Metrics) Window(topic string, inFlight, window int) {
	tm := m.topic(topic)
	tm.inFlight.Set(float64(inFlight))
	tm.window.Set(float64(window))
}

// ---- service.Observer -----------------------------------------------------

// Request implements service.Observer.
func (m *Metrics) Request(endpoint string, code int, d time.Duration) {
	m.requests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
	m.requestSeconds.WithLabelValues(endpoint).Observe(d.Seconds())
}

// ---- forwarder.Observer ---------------------------------------------------

// EventForwarded implements forwarder.Observer.
func (m *Metrics) EventForwarded(name string) { m.forwarded.WithLabelValues(name).Inc() }

// EventDropped implements forwarder.Observer.
func (m *Metrics) EventDropped(name, reason string) { m.dropped.WithLabelValues(name, reason).Inc() }

// Gap implements forwarder.Observer.
func (m *Metrics) Gap() { m.gaps.Inc() }

// ---- engine.CallObserver --------------------------------------------------

// EngineCall implements engine.CallObserver: route is "METHOD /template".
func (m *Metrics) EngineCall(route string, status int, d time.Duration) {
	v, ok := m.routes.Load(route)
	if !ok {
		method, tmpl, found := strings.Cut(route, " ")
		if !found {
			method, tmpl = "", route
		}
		v, _ = m.routes.LoadOrStore(route, &routeMetrics{method: method, route: tmpl})
	}
	rm := v.(*routeMetrics)
	c := statusClass(status)
	o := rm.byClass[c].Load()
	if o == nil {
		obs := m.engineSeconds.WithLabelValues(rm.method, rm.route, statusClasses[c])
		rm.byClass[c].CompareAndSwap(nil, &obs)
		o = rm.byClass[c].Load()
	}
	(*o).Observe(d.Seconds())
}

// statusClass indexes statusClasses.
func statusClass(status int) int {
	switch {
	case status <= 0:
		return 0
	case status >= 600:
		return 5
	}
	return status / 100
}

// ---- readiness and NATS ---------------------------------------------------

// SetReady records the result of one readiness check (check "all" is the
// overall answer).
func (m *Metrics) SetReady(check string, ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	m.ready.WithLabelValues(check).Set(v)
}

// WatchNATS registers pe_bridge_nats_connected and
// pe_bridge_nats_reconnects_total (and the connection's message and byte
// counters), read from nc at each scrape.
func (m *Metrics) WatchNATS(nc *nats.Conn) {
	m.reg.MustRegister(natsCollector{nc: nc})
}

var (
	natsConnectedDesc  = prometheus.NewDesc(Namespace+"_nats_connected", "1 while the bridge's NATS connection is connected, 0 while it is reconnecting or closed.", nil, nil)
	natsReconnectsDesc = prometheus.NewDesc(Namespace+"_nats_reconnects_total", "Reconnects of the bridge's NATS connection.", nil, nil)
	natsInMsgsDesc     = prometheus.NewDesc(Namespace+"_nats_received_messages_total", "Messages received on the bridge's NATS connection.", nil, nil)
	natsOutMsgsDesc    = prometheus.NewDesc(Namespace+"_nats_sent_messages_total", "Messages sent on the bridge's NATS connection.", nil, nil)
	natsInBytesDesc    = prometheus.NewDesc(Namespace+"_nats_received_bytes_total", "Payload bytes received on the bridge's NATS connection.", nil, nil)
	natsOutBytesDesc   = prometheus.NewDesc(Namespace+"_nats_sent_bytes_total", "Payload bytes sent on the bridge's NATS connection.", nil, nil)
)

type natsCollector struct{ nc *nats.Conn }

func (c natsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{natsConnectedDesc, natsReconnectsDesc, natsInMsgsDesc, natsOutMsgsDesc, natsInBytesDesc, natsOutBytesDesc} {
		ch <- d
	}
}

func (c natsCollector) Collect(ch chan<- prometheus.Metric) {
	connected := 0.0
	if c.nc.IsConnected() {
		connected = 1
	}
	st := c.nc.Stats()
	ch <- prometheus.MustNewConstMetric(natsConnectedDesc, prometheus.GaugeValue, connected)
	ch <- prometheus.MustNewConstMetric(natsReconnectsDesc, prometheus.CounterValue, float64(st.Reconnects))
	ch <- prometheus.MustNewConstMetric(natsInMsgsDesc, prometheus.CounterValue, float64(st.InMsgs))
	ch <- prometheus.MustNewConstMetric(natsOutMsgsDesc, prometheus.CounterValue, float64(st.OutMsgs))
	ch <- prometheus.MustNewConstMetric(natsInBytesDesc, prometheus.CounterValue, float64(st.InBytes))
	ch <- prometheus.MustNewConstMetric(natsOutBytesDesc, prometheus.CounterValue, float64(st.OutBytes))
}
