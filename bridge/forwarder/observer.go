package forwarder

// Observer receives the forwarder's measurements; cmd/bridge implements it
// with Prometheus metrics. Calls must be cheap and must not block.
// Config.Observer nil means none.
type Observer interface {
	// EventForwarded: one engine event of name was published on NATS.
	EventForwarded(name string)
	// EventDropped: one engine event of name could not be forwarded (reason
	// is a short snake_case word such as "decode" or "publish").
	EventDropped(name, reason string)
	// Gap: the engine event feed was interrupted (reconnect, poll error), so
	// events may be missing; consumers were told on NATS.
	Gap()
}
