package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// specPath is the engine's OpenAPI file (copy of shared/engine/openapi.json, MIT, shipped by 5Minds in
// 5minds/node-red-contrib-processcube doc_generator/swagger.json).
const specPath = "testdata/openapi.json"

// The spec as shipped cannot be loaded, and in places contradicts what the engine and its official
// client do (../../../../shared/engine/API.md). Every deviation is repaired by exactly one named fix
// below; nothing else is relaxed. A fix that no longer finds its target fails the test, so the table
// stays honest when the spec file is updated.

// rawFix repairs the JSON document before it is loaded: these are defects kin-openapi cannot even
// unmarshal or that make a schema meaningless (non-OpenAPI type names).
type rawFix struct {
	name  string
	why   string
	apply func(doc map[string]any) (changed int)
}

// docFix patches the loaded openapi3.T: places where the spec is well-formed but wrong about the wire.
type docFix struct {
	name  string
	why   string
	apply func(doc *openapi3.T) error
}

var rawFixes = []rawFix{
	{
		name: "media-type-required",
		why: "requestBody.content[*].required (bool) is not an OpenAPI field; the author meant requestBody.required. " +
			"Moved there, so required bodies stay required.",
		apply: func(doc map[string]any) int {
			n := 0
			forEachOperation(doc, func(_, _ string, op map[string]any) {
				rb, _ := op["requestBody"].(map[string]any)
				content, _ := rb["content"].(map[string]any)
				for _, mt := range content {
					m, _ := mt.(map[string]any)
					if req, ok := m["required"].(bool); ok {
						delete(m, "required")
						rb["required"] = req
						n++
					}
				}
			})
			return n
		},
	},
	{
		name: "request-body-example",
		why:  "requestBody.example is not an OpenAPI field (fetch_and_lock, POST /process_definitions); dropped (documentation only).",
		apply: func(doc map[string]any) int {
			n := 0
			forEachOperation(doc, func(_, _ string, op map[string]any) {
				if rb, ok := op["requestBody"].(map[string]any); ok {
					if _, ok := rb["example"]; ok {
						delete(rb, "example")
						n++
					}
				}
			})
			return n
		},
	},
	{
		name: "property-required-bool",
		why: "properties declare `required: true|false` (a JSON-Schema draft-3 habit) instead of listing them in the " +
			"object's required array (reserve.actualOwnerId, change_owner.newOwner, retry.newStartToken, message payload). " +
			"`true` is moved to the parent's required array, `false` dropped.",
		apply: func(doc map[string]any) int {
			n := 0
			walkSchemas(doc, func(s map[string]any) {
				props, _ := s["properties"].(map[string]any)
				for name, p := range props {
					pm, _ := p.(map[string]any)
					req, ok := pm["required"].(bool)
					if !ok {
						continue
					}
					delete(pm, "required")
					n++
					if req {
						list, _ := s["required"].([]any)
						s["required"] = append(list, name)
					}
				}
			})
			return n
		},
	},
	{
		name: "typescript-type-names",
		why: "schemas use TypeScript type names as `type` (`Record<string, any>` for FlowNodeInstance.startToken/endToken, " +
			"`Array<string> | string | SearchQuery` and friends for query parameters). Tokens become free-form JSON " +
			"(any value, API.md §3.6); query parameters become strings, which is what the client puts on the wire " +
			"(arrays joined with ',', SearchQuery/JSON URI-encoded, API.md §2.8).",
		apply: func(doc map[string]any) int {
			n := 0
			walkSchemas(doc, func(s map[string]any) {
				t, ok := s["type"].(string)
				if !ok || !strings.ContainsAny(t, "<|") {
					return
				}
				n++
				if strings.HasPrefix(t, "Record<") {
					delete(s, "type") // any JSON value
					return
				}
				for k := range s {
					if k != "description" && k != "example" {
						delete(s, k)
					}
				}
				s["type"] = "string"
			})
			return n
		},
	},
}

var docFixes = []docFix{
	{
		name: "response-description",
		why:  "many responses (all long-polling routes, start, …) lack the `description` OpenAPI 3.0 requires; filled with a placeholder.",
		apply: func(doc *openapi3.T) error {
			n := 0
			for _, item := range doc.Paths.Map() {
				for _, op := range item.Operations() {
					for _, r := range op.Responses.Map() {
						if r.Value != nil && r.Value.Description == nil {
							r.Value.WithDescription("(undocumented)")
							n++
						}
					}
				}
			}
			if n == 0 {
				return fmt.Errorf("every response has a description now")
			}
			return nil
		},
	},
	{
		name: "bearer-scheme-in",
		why:  "securitySchemes.bearerAuth (type http, scheme bearer) also carries `in: header`, which only apiKey schemes may have.",
		apply: func(doc *openapi3.T) error {
			ref := doc.Components.SecuritySchemes["bearerAuth"]
			if ref == nil || ref.Value == nil || ref.Value.In == "" {
				return fmt.Errorf("bearerAuth has no `in` any more")
			}
			ref.Value.In = ""
			return nil
		},
	},
	{
		name: "fetch-and-lock-200",
		why: "POST /external_tasks/fetch_and_lock is documented as 204 with a body; the engine answers 200 with a JSON " +
			"array (the client maps the body, an empty 204 would crash it). API.md §2.1, §1.4.",
		apply: func(doc *openapi3.T) error {
			op, err := operation(doc, "POST", "/external_tasks/fetch_and_lock")
			if err != nil {
				return err
			}
			r := op.Responses.Value("204")
			if r == nil {
				return fmt.Errorf("no 204 response left to move")
			}
			op.Responses.Delete("204")
			op.Responses.Set("200", r)
			return nil
		},
	},
	{
		name: "payload-filter-optional",
		why:  "FetchAndLockRequestPayload lists payloadFilter as required; the official client omits it when unset. API.md §2.1.",
		apply: func(doc *openapi3.T) error {
			return removeRequired(doc, "FetchAndLockRequestPayload", "payloadFilter")
		},
	},
	{
		name: "error-body-property",
		why: "HandleExternalTaskErrorRequestPayload requires `bpmnError`, but the property is `error` (what the client sends " +
			"and what the schema's own properties list). required becomes [workerId, error]. API.md §2.1.",
		apply: func(doc *openapi3.T) error {
			s, err := schema(doc, "HandleExternalTaskErrorRequestPayload")
			if err != nil {
				return err
			}
			if !replaceString(s.Required, "bpmnError", "error") {
				return fmt.Errorf("bpmnError not in required %v", s.Required)
			}
			return nil
		},
	},
	{
		name: "error-details-any",
		why: "ExternalTaskError.errorDetails is typed object, but the official worker sends `err.errorDetails || err.stack` " +
			"(a string by default). Any JSON value. API.md §2.1.",
		apply: func(doc *openapi3.T) error {
			s, err := schema(doc, "ExternalTaskError")
			if err != nil {
				return err
			}
			p := s.Properties["errorDetails"]
			if p == nil || p.Value == nil {
				return fmt.Errorf("no errorDetails property")
			}
			p.Value.Type = nil
			return nil
		},
	},
	{
		name: "message-trigger-body",
		why: "POST /messages/{eventName}/trigger documents the body as {payload: string}; the official client sends the " +
			"payload object itself as the body (PY wraps it in {payload}). Any JSON object. API.md §2.5.",
		apply: func(doc *openapi3.T) error {
			op, err := operation(doc, "POST", "/messages/{eventName}/trigger")
			if err != nil {
				return err
			}
			if op.RequestBody == nil || op.RequestBody.Value == nil {
				return fmt.Errorf("no request body")
			}
			mt := op.RequestBody.Value.Content.Get("application/json")
			if mt == nil || mt.Schema == nil || mt.Schema.Value.Properties["payload"] == nil {
				return fmt.Errorf("request body no longer {payload}")
			}
			mt.Schema = openapi3.NewObjectSchema().NewRef()
			return nil
		},
	},
	{
		name: "trigger-query-params",
		why: "the message trigger documents ?processInstanceId=, the signal trigger ?process_instance_id=; the client sends " +
			"process_instance_id (and custom_correlation_id, engine ≥ 19.2) for both. Both routes get both spellings. API.md §2.5.",
		apply: func(doc *openapi3.T) error {
			for _, p := range []string{"/messages/{eventName}/trigger", "/signals/{eventName}/trigger"} {
				op, err := operation(doc, "POST", p)
				if err != nil {
					return err
				}
				for _, name := range []string{"processInstanceId", "process_instance_id", "custom_correlation_id"} {
					if op.Parameters.GetByInAndName("query", name) == nil {
						op.Parameters = append(op.Parameters, &openapi3.ParameterRef{Value: openapi3.NewQueryParameter(name).
							WithSchema(openapi3.NewStringSchema())})
					}
				}
			}
			return nil
		},
	},
	{
		name: "signal-trigger-body",
		why: "POST /signals/{eventName}/trigger has no requestBody, yet the client sends the payload as the body exactly " +
			"like for messages. Optional JSON object. API.md §2.5.",
		apply: func(doc *openapi3.T) error {
			op, err := operation(doc, "POST", "/signals/{eventName}/trigger")
			if err != nil {
				return err
			}
			if op.RequestBody != nil {
				return fmt.Errorf("signal trigger has a request body now")
			}
			op.RequestBody = &openapi3.RequestBodyRef{Value: openapi3.NewRequestBody().
				WithJSONSchema(openapi3.NewObjectSchema())}
			return nil
		},
	},
	{
		name: "start-callback-enum",
		why: "StartCallbackType is `oneOf` three `const` branches; `const` is not OpenAPI 3.0, so every branch matches " +
			"every integer and oneOf always fails. Replaced by enum [1,2,3]. API.md §2.2.",
		apply: func(doc *openapi3.T) error {
			s, err := schema(doc, "StartCallbackType")
			if err != nil {
				return err
			}
			if len(s.OneOf) != 3 {
				return fmt.Errorf("oneOf has %d branches", len(s.OneOf))
			}
			s.OneOf = nil
			s.Enum = []any{1, 2, 3}
			return nil
		},
	},
	{
		name: "process-instance-error-nullable",
		why: "ProcessInstance.error is required and typed object, but an instance without an error has none: the engine " +
			"sends null, and sends a serialized error as a JSON string (the client deserializes strings, API.md §2.3). " +
			"Any JSON value or null.",
		apply: func(doc *openapi3.T) error {
			s, err := schema(doc, "ProcessInstance")
			if err != nil {
				return err
			}
			p := s.Properties["error"]
			if p == nil || p.Value == nil {
				return fmt.Errorf("no error property")
			}
			p.Value.Type = nil
			p.Value.Nullable = true
			return nil
		},
	},
}

// loadSpec loads testdata/openapi.json and applies every fix; each fix must change something.
func loadSpec(t testing.TB) *openapi3.T {
	t.Helper()
	data, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("reading %s: %v", specPath, err)
	}
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatalf("decoding %s: %v", specPath, err)
	}
	for _, f := range rawFixes {
		if n := f.apply(raw); n == 0 {
			t.Fatalf("spec fix %q matched nothing: the spec changed, review the fix table", f.name)
		}
	}
	fixed, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(fixed)
	if err != nil {
		t.Fatalf("loading the fixed spec: %v", err)
	}
	for _, f := range docFixes {
		if err := f.apply(doc); err != nil {
			t.Fatalf("spec fix %q: %v: the spec changed, review the fix table", f.name, err)
		}
	}
	if err := doc.Validate(context.Background(), openapi3.DisableExamplesValidation()); err != nil {
		t.Fatalf("fixed spec is not valid OpenAPI: %v", err)
	}
	return doc
}

func TestSpecLoadsWithFixes(t *testing.T) {
	t.Parallel()
	doc := loadSpec(t)
	var names []string
	for _, f := range rawFixes {
		names = append(names, f.name)
	}
	for _, f := range docFixes {
		names = append(names, f.name)
	}
	sort.Strings(names)
	for i := 1; i < len(names); i++ {
		if names[i] == names[i-1] {
			t.Errorf("duplicate fix name %q", names[i])
		}
	}
	if got := len(doc.Paths.Map()); got < 80 {
		t.Errorf("spec has %d paths, want the full engine API (> 80)", got)
	}
}

// --- helpers over the raw JSON document ---

func forEachOperation(doc map[string]any, fn func(method, path string, op map[string]any)) {
	paths, _ := doc["paths"].(map[string]any)
	for p, item := range paths {
		im, _ := item.(map[string]any)
		for m, op := range im {
			if om, ok := op.(map[string]any); ok {
				fn(m, p, om)
			}
		}
	}
}

// walkSchemas calls fn for every JSON object that sits where a schema can be (reachable under
// components.schemas, parameters[].schema and content[*].schema), depth first, children first.
func walkSchemas(doc map[string]any, fn func(map[string]any)) {
	var walk func(v any, inSchema bool)
	walk = func(v any, inSchema bool) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				switch {
				case k == "schema":
					walk(c, true)
				case k == "schemas" || k == "properties":
					if m, ok := c.(map[string]any); ok {
						for _, s := range m {
							walk(s, true)
						}
					}
				case k == "items" || k == "additionalProperties" || k == "not":
					walk(c, inSchema)
				case k == "oneOf" || k == "anyOf" || k == "allOf":
					walk(c, inSchema)
				case !inSchema:
					walk(c, false)
				}
			}
			if inSchema {
				fn(x)
			}
		case []any:
			for _, c := range x {
				walk(c, inSchema)
			}
		}
	}
	walk(doc, false)
}

// --- helpers over the loaded document ---

func operation(doc *openapi3.T, method, path string) (*openapi3.Operation, error) {
	item := doc.Paths.Value(path)
	if item == nil {
		return nil, fmt.Errorf("no path %s", path)
	}
	op := item.GetOperation(method)
	if op == nil {
		return nil, fmt.Errorf("no %s %s", method, path)
	}
	return op, nil
}

func schema(doc *openapi3.T, name string) (*openapi3.Schema, error) {
	ref := doc.Components.Schemas[name]
	if ref == nil || ref.Value == nil {
		return nil, fmt.Errorf("no schema %s", name)
	}
	return ref.Value, nil
}

func removeRequired(doc *openapi3.T, schemaName, prop string) error {
	s, err := schema(doc, schemaName)
	if err != nil {
		return err
	}
	for i, r := range s.Required {
		if r == prop {
			s.Required = append(s.Required[:i:i], s.Required[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("%s not in %s.required", prop, schemaName)
}

func replaceString(list []string, from, to string) bool {
	for i, s := range list {
		if s == from {
			list[i] = to
			return true
		}
	}
	return false
}
