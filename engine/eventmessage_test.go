package engine_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/pe-bridge/pe-bridge/engine"
)

// TestEventMessageDefinitionIDShapes: process_deployed carries
// processDefinitionId as a string or as an array (API.md §2.7).
func TestEventMessageDefinitionIDShapes(t *testing.T) {
	for _, c := range []struct {
		body  string
		first string
		all   []string
	}{
		{`{"processDefinitionId":"Definitions_a"}`, "Definitions_a", []string{"Definitions_a"}},
		{`{"processDefinitionId":["Definitions_a","Definitions_b"]}`, "Definitions_a", []string{"Definitions_a", "Definitions_b"}},
		{`{"processDefinitionId":[]}`, "", []string{}},
		{`{"processDefinitionId":null,"processInstanceId":"pi"}`, "", nil},
		{`{"processInstanceId":"pi","currentToken":{"a":1}}`, "", nil},
	} {
		var m engine.EventMessage
		if err := json.Unmarshal([]byte(c.body), &m); err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		if m.ProcessDefinitionID != c.first || !slices.Equal(m.ProcessDefinitionIDs, c.all) {
			t.Errorf("%s: got %q %q, want %q %q", c.body, m.ProcessDefinitionID, m.ProcessDefinitionIDs, c.first, c.all)
		}
	}
	var m engine.EventMessage
	if err := json.Unmarshal([]byte(`{"processInstanceId":"pi","currentToken":{"a":1},"flowNodeId":"f"}`), &m); err != nil ||
		m.ProcessInstanceID != "pi" || string(m.CurrentToken) != `{"a":1}` || m.FlowNodeID != "f" {
		t.Fatalf("other fields: %+v %v", m, err)
	}
	for _, bad := range []string{`{"processDefinitionId":5}`, `{"processDefinitionId":[1]}`, `[]`} {
		if err := json.Unmarshal([]byte(bad), &m); err == nil {
			t.Errorf("%s: want error", bad)
		}
	}
	out, err := json.Marshal(engine.EventMessage{ProcessDefinitionID: "d", ProcessDefinitionIDs: []string{"d", "e"}})
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	_ = json.Unmarshal(out, &back)
	if back["processDefinitionId"] != "d" {
		t.Fatalf("encoded %s", out)
	}
}
