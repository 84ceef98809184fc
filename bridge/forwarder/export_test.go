package forwarder

// SetOnPing makes f call fn on every Engine.IO ping of its connection.
func (f *SocketFeed) SetOnPing(fn func()) { f.onPing = fn }
