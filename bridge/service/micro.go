package service

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/pe-bridge/pe-bridge/events"
)

// The service speaks the NATS micro protocol itself rather than through
// micro.AddService: micro times a request by its handler's return and counts
// an error only when the handler calls Error, but micro calls the handlers of
// one endpoint one at a time, so the service must answer from goroutines of
// its own, and micro's $SRV.STATS would then show about 10 µs and no errors
// for every request (micro's StatsHandler can add "data", not correct the
// figures). Here the discovery subjects answer with micro's own types
// (micro.Ping, micro.Info, micro.Stats), so `nats micro ls|info|stats` and
// every micro client see the service as before, with the real request
// counts, errors and processing times (arrival to reply sent).

// subscribeDiscovery subscribes $SRV.<VERB>, $SRV.<VERB>.pe-bridge and
// $SRV.<VERB>.pe-bridge.<id> for PING, INFO and STATS (no queue group: every
// instance answers, as micro does).
func (s *Service) subscribeDiscovery() ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	for _, v := range []struct {
		verb  micro.Verb
		reply func() any
	}{
		{micro.PingVerb, func() any { return micro.Ping{ServiceIdentity: s.identity(), Type: micro.PingResponseType} }},
		{micro.InfoVerb, func() any { return s.info() }},
		{micro.StatsVerb, func() any { return s.Stats() }},
	} {
		for _, ids := range [][2]string{{"", ""}, {events.ServiceName, ""}, {events.ServiceName, s.id}} {
			subj, err := micro.ControlSubject(v.verb, ids[0], ids[1])
			if err != nil {
				return subs, fmt.Errorf("service: %w", err)
			}
			reply := v.reply
			sub, err := s.nc.Subscribe(subj, func(m *nats.Msg) {
				if m.Reply == "" {
					return
				}
				b, err := json.Marshal(reply())
				if err == nil {
					err = m.Respond(b)
				}
				if err != nil {
					s.log.Warn("service: answering discovery request", "subject", m.Subject, "error", err)
				}
			})
			if err != nil {
				return subs, fmt.Errorf("service: subscribing to %s: %w", subj, err)
			}
			subs = append(subs, sub)
		}
	}
	return subs, nil
}

func (s *Service) identity() micro.ServiceIdentity {
	md := maps.Clone(s.cfg.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	return micro.ServiceIdentity{Name: events.ServiceName, ID: s.id, Version: s.cfg.Version, Metadata: md}
}

func (s *Service) info() micro.Info {
	eps := make([]micro.EndpointInfo, len(s.endpoints))
	for i, ep := range s.endpoints {
		eps[i] = micro.EndpointInfo{Name: ep.name, Subject: ep.subject, QueueGroup: s.cfg.QueueGroup,
			Metadata: map[string]string{"description": ep.description, "group": ep.group}}
	}
	return micro.Info{ServiceIdentity: s.identity(), Type: micro.InfoResponseType, Description: s.cfg.Description, Endpoints: eps}
}

// endpointData is each endpoint's "data" in $SRV.STATS.
type endpointData struct {
	InFlight int64 `json:"inFlight"`
}

// Stats is what $SRV.STATS answers: per endpoint, the requests answered,
// the error replies among them (every code but 200), the last error, and
// the time from a request's arrival to its reply being sent.
func (s *Service) Stats() micro.Stats {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	st := micro.Stats{ServiceIdentity: s.identity(), Type: micro.StatsResponseType, Started: started}
	for _, ep := range s.endpoints {
		ep.stats.mu.Lock()
		es := &micro.EndpointStats{
			Name: ep.name, Subject: ep.subject, QueueGroup: s.cfg.QueueGroup,
			NumRequests: ep.stats.requests, NumErrors: ep.stats.errors, LastError: ep.stats.lastError,
			ProcessingTime: ep.stats.processingTime,
		}
		if ep.stats.requests > 0 {
			es.AverageProcessingTime = ep.stats.processingTime / time.Duration(ep.stats.requests)
		}
		ep.stats.mu.Unlock()
		es.Data, _ = json.Marshal(endpointData{InFlight: ep.inFlight.Load()})
		st.Endpoints = append(st.Endpoints, es)
	}
	return st
}

// newServiceID is a micro instance id: 26 random base-32 characters.
func newServiceID() string {
	return rand.Text()
}
