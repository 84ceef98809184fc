package telemetry

import (
	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/bridge/service"
	"github.com/pe-bridge/pe-bridge/engine"
)

// The hooks each type implements.
var (
	_ bridge.Observer     = (*Metrics)(nil)
	_ service.Observer    = (*Metrics)(nil)
	_ forwarder.Observer  = (*Metrics)(nil)
	_ engine.CallObserver = (*Metrics)(nil)
	_ bridge.Tracer       = (*Tracing)(nil)
	_ service.Tracer      = (*Tracing)(nil)
)
