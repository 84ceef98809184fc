package engine

import "golang.org/x/oauth2"

// Socket.IO notifications ([V] API.md §2.7 b; the official client's
// Clients/Lib/SocketIoManager.js and Types/SocketSettings.js): Socket.IO v4
// on the engine host, namespace SocketNamespace, path
// "<engine url path>" + SocketPath, the token in an "Authorization" header
// of the polling handshake without "Bearer", plus "userId".

// SocketNamespace is the Socket.IO namespace of the engine's notifications.
const SocketNamespace = "/api"

// SocketPath is the Socket.IO path below the engine URL's path.
const SocketPath = "/socket.io"

// SocketEventName maps a notification name of the REST long poll to the
// event name the engine emits on Socket.IO: the process instance events are
// named OnProcess*, process_owner_changed and process_is_executable_changed
// are renamed, the rest keep their name.
func SocketEventName(name string) string {
	if s, ok := socketNames[name]; ok {
		return s
	}
	return name
}

var socketNames = map[string]string{
	"process_starting":              "OnProcessStarting",
	"process_started":               "OnProcessStarted",
	"process_resumed":               "OnProcessResumed",
	"process_ended":                 "OnProcessFinished",
	"process_error":                 "OnProcessError",
	"process_terminated":            "OnProcessTerminated",
	"process_instances_deleted":     "OnProcessInstancesDeleted",
	"process_owner_changed":         "process_instance_owner_changed",
	"process_is_executable_changed": "process_executable_changed",
}

// Tokens is the client's token source, for the Socket.IO connection of the
// event forwarder (which sends the same token the REST calls use).
func (c *Client) Tokens() oauth2.TokenSource { return c.ts }
