package authority_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/pe-bridge/pe-bridge/engine"
	"github.com/pe-bridge/pe-bridge/engine/authority"
	"github.com/pe-bridge/pe-bridge/engine/emulator"
)

// An authority and an engine emulator that trusts it, as `bridge dev` or a
// test wires them; the client finds the authority through the engine.
func Example() {
	auth, _ := authority.New(authority.Config{Clients: []authority.Client{
		{ID: "external_task_worker", Secret: "external_task_worker_secret", Scopes: []string{"engine_etw", "engine_read", "engine_write"}},
	}})
	asrv := httptest.NewServer(auth)
	defer asrv.Close()
	auth.SetIssuer(asrv.URL) // known only once the listener runs

	emu, _ := emulator.New(emulator.Config{Verify: auth.Verify, AuthorityURL: asrv.URL + "/"})
	defer emu.Close()
	esrv := httptest.NewServer(emu)
	defer esrv.Close()

	ctx := context.Background()
	ts, err := engine.ClientCredentials(ctx, engine.CredentialsConfig{
		EngineURL: esrv.URL, ClientID: "external_task_worker", ClientSecret: "external_task_worker_secret",
		Scopes: []string{"engine_etw"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	c, _ := engine.NewClient(esrv.URL, engine.ClientConfig{TokenSource: ts})
	defer c.Close()
	topics, err := c.DeployedTopics(ctx)
	fmt.Println(len(topics), err)
	// Output: 0 <nil>
}
