package forwarder_test

import (
	"os"

	"github.com/zishang520/socket.io/v3/pkg/log"
)

// DEBUG='*' (or a pattern such as 'socket.io-client:*') prints the
// Socket.IO library's own debug log, client and server, with microsecond
// times: how the races described in socketio.go were found.
func init() {
	if os.Getenv("DEBUG") != "" {
		log.DEBUG.Store(true)
		log.Flags = log.Ltime | log.Lmicroseconds
	}
}
