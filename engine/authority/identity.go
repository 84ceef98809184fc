package authority

import "github.com/pe-bridge/pe-bridge/engine/emulator"

// Identity is what Verify returns for a valid token: the engine emulator's
// identity, so that Verify plugs into emulator.Config.Verify.
type Identity = emulator.Identity
