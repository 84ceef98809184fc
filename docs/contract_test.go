// Package docs_test keeps docs/contract.md and docs/asyncapi.yaml true to the
// code: every subject, CloudEvent type, extension and header the code defines
// must appear in both documents, and every pe.* subject, io.pebridge.* type,
// ce-* attribute, Pe-*/Nats-* header and "$pe" marker the documents name must
// exist in the code.
package docs_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.yaml.in/yaml/v4"

	"github.com/pe-bridge/pe-bridge/bridge"
	"github.com/pe-bridge/pe-bridge/bridge/forwarder"
	"github.com/pe-bridge/pe-bridge/bridge/service"
	"github.com/pe-bridge/pe-bridge/events"
	"github.com/pe-bridge/pe-bridge/internal/config"
)

// codeNames is what the code defines.
type codeNames struct {
	required        map[string]string // value → where it comes from; must appear in every document
	serviceSubjects []string
	events          []string // engine notification names forwarded by default
	attributes      []string // ce-* header names (attributes and extensions)
	headers         []string // other header names
	markers         []string // "$pe" marker values
}

// exportedStringConsts returns the exported string constants of the Go
// package in dir (parsed, so a new constant is picked up without touching
// this test).
func exportedStringConsts(t *testing.T, dir string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !name.IsExported() || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out[name.Name] = v
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no exported string constants in %s", dir)
	}
	return out
}

func collect(t *testing.T) codeNames {
	t.Helper()
	c := codeNames{required: map[string]string{}}
	consts := exportedStringConsts(t, "../events")
	for name, v := range consts {
		c.required[v] = "events." + name
		switch {
		case strings.HasPrefix(name, "Ext"):
			c.attributes = append(c.attributes, events.HeaderPrefix+v)
			c.required[events.HeaderPrefix+v] = "events." + name + " as header"
		case strings.HasPrefix(name, "Header") && strings.HasPrefix(v, events.HeaderPrefix) && v != events.HeaderPrefix:
			c.attributes = append(c.attributes, v)
		case strings.HasPrefix(name, "Header"):
			c.headers = append(c.headers, v)
		case strings.HasPrefix(name, "Marker"):
			c.markers = append(c.markers, v)
		case name == "OutcomeHeader":
			c.headers = append(c.headers, v)
		}
	}
	// The service's endpoints as registered (no engine call happens in New).
	svc, err := service.New(new(nats.Conn), struct{ service.Engine }{}, service.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.serviceSubjects = svc.Subjects()
	for _, s := range c.serviceSubjects {
		c.required[s] = "service endpoint"
	}
	// The events forwarded by default: the forwarder's list and the one the
	// bridge binary's --events flag defaults to.
	for from, list := range map[string][]string{"forwarder.DefaultEvents": forwarder.DefaultEvents, "config.DefaultEvents": config.DefaultEvents} {
		for _, n := range list {
			if !slices.Contains(c.events, n) {
				c.events = append(c.events, n)
			}
			c.required[events.EventPrefix+n] = from
			c.required[events.EventType(n)] = from
		}
	}
	for v, from := range map[string]string{
		service.HeaderAuthorization: "service.HeaderAuthorization",
		service.HeaderUserToken:     "service.HeaderUserToken",
		forwarder.HeaderMsgID:       "forwarder.HeaderMsgID",
		micro.ErrorHeader:           "micro.ErrorHeader",
		micro.ErrorCodeHeader:       "micro.ErrorCodeHeader",
	} {
		c.required[v] = from
		c.headers = append(c.headers, v)
	}
	c.events = append(c.events, forwarder.GapEvent) // published by the forwarder itself
	c.required[events.EventPrefix+forwarder.GapEvent] = "forwarder.GapEvent"
	c.required[events.EventType(forwarder.GapEvent)] = "forwarder.GapEvent"
	c.required[service.DefaultQueueGroup] = "service.DefaultQueueGroup"
	c.required[bridge.DefaultFailureErrorCode] = "bridge.DefaultFailureErrorCode"
	return c
}

var (
	reSubject   = regexp.MustCompile(`(?:^|[^\w$-])(pe\.[A-Za-z0-9_.%<>{}*-]+)`)
	reType      = regexp.MustCompile(`io\.pebridge\.[A-Za-z0-9_.<>{}]+`)
	reAttribute = regexp.MustCompile(`(?:^|[^\w-])(ce-[a-z]+)`)
	reHeader    = regexp.MustCompile(`(?:^|[^\w-])((?:Pe|Nats)-[A-Za-z-]*[A-Za-z])`)
	reMarker    = regexp.MustCompile(`"\$pe"\s*:\s*"?([A-Za-z_]+)`)
)

// check returns the drift problems of one document's text.
func check(c codeNames, doc string) []string {
	var problems []string
	for v, from := range c.required {
		if !strings.Contains(doc, v) {
			problems = append(problems, "missing "+strconv.Quote(v)+" ("+from+")")
		}
	}
	placeholder := func(s string) bool {
		return s == ">" || s == "*" || strings.HasPrefix(s, "<") || strings.HasPrefix(s, "{")
	}
	for _, m := range reSubject.FindAllStringSubmatch(doc, -1) {
		s := strings.TrimRight(m[1], ".")
		switch {
		case slices.Contains(c.serviceSubjects, s),
			s+"." == events.TaskPrefix, s+"." == events.CancelPrefix, s+"." == events.EventPrefix:
		case strings.HasPrefix(s, events.TaskPrefix) || strings.HasPrefix(s, events.CancelPrefix):
			tok := strings.TrimPrefix(strings.TrimPrefix(s, events.TaskPrefix), events.CancelPrefix)
			if _, err := events.TopicFromToken(tok); err != nil && !placeholder(tok) {
				problems = append(problems, "subject "+s+" is no valid task/cancel subject: "+err.Error())
			}
		case strings.HasPrefix(s, events.EventPrefix):
			n := strings.TrimPrefix(s, events.EventPrefix)
			if !slices.Contains(c.events, n) && !placeholder(n) {
				problems = append(problems, "subject "+s+" names an event the forwarder does not forward")
			}
		default:
			problems = append(problems, "subject "+s+" does not exist in the code")
		}
	}
	for _, ty := range reType.FindAllString(doc, -1) {
		ty = strings.TrimRight(ty, ".")
		if !strings.Contains(ty, "{") {
			ty = strings.TrimRight(ty, "}.")
		}
		switch {
		case ty == events.TypeTask, ty == events.TypeTaskCancelled,
			ty == events.EventType("<name>"), ty == events.EventType("{name}"):
		case strings.HasPrefix(ty, events.TypeEventPrefix) && strings.HasSuffix(ty, events.TypeEventSuffix) &&
			slices.Contains(c.events, strings.TrimSuffix(strings.TrimPrefix(ty, events.TypeEventPrefix), events.TypeEventSuffix)):
		default:
			problems = append(problems, "CloudEvent type "+ty+" does not exist in the code")
		}
	}
	for _, m := range reAttribute.FindAllStringSubmatch(doc, -1) {
		if !slices.Contains(c.attributes, m[1]) {
			problems = append(problems, "header "+m[1]+" is no CloudEvent attribute or extension of the code")
		}
	}
	for _, m := range reHeader.FindAllStringSubmatch(doc, -1) {
		if !slices.Contains(c.headers, m[1]) {
			problems = append(problems, "header "+m[1]+" does not exist in the code")
		}
	}
	for _, m := range reMarker.FindAllStringSubmatch(doc, -1) {
		if !slices.Contains(c.markers, m[1]) {
			problems = append(problems, `"$pe" marker `+m[1]+" does not exist in the code")
		}
	}
	slices.Sort(problems)
	return slices.Compact(problems)
}

func TestDocsMatchCode(t *testing.T) {
	c := collect(t)
	if len(c.serviceSubjects) < 11 || len(c.events) == 0 || len(c.attributes) < 14 || len(c.markers) != 3 {
		t.Fatalf("collected too little from the code: %+v", c)
	}
	for _, name := range []string{"contract.md", "asyncapi.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range check(c, string(b)) {
			t.Errorf("%s: %s", name, p)
		}
	}
}

// TestCheckCatchesDrift shows that the check fails both ways: a constant the
// documents lack, and names in the documents the code lacks.
func TestCheckCatchesDrift(t *testing.T) {
	c := collect(t)
	b, err := os.ReadFile("contract.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	c.required["pe.brand.new"] = "a new constant"
	drifted := doc + "\nAlso `pe.usertask.delete`, `pe.event.coffee_ready`, `io.pebridge.task.v2`, `ce-priority`, `Pe-Retry`, " +
		`{"$pe":"retry"} and pe.task.bad.token.`
	got := strings.Join(check(c, drifted), "\n")
	for _, want := range []string{`missing "pe.brand.new"`, "pe.usertask.delete", "pe.event.coffee_ready",
		"io.pebridge.task.v2", "ce-priority", "Pe-Retry", "marker retry", "pe.task.bad.token"} {
		if !strings.Contains(got, want) {
			t.Errorf("drift %q not reported; problems:\n%s", want, got)
		}
	}
}

// TestAsyncAPIStructure checks the AsyncAPI document is well-formed 3.0:
// every $ref resolves, every operation names a channel, every parameter in a
// channel address is declared.
func TestAsyncAPIStructure(t *testing.T) {
	b, err := os.ReadFile("asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["asyncapi"] != "3.0.0" {
		t.Fatalf("asyncapi %v, want 3.0.0", doc["asyncapi"])
	}
	for _, k := range []string{"info", "channels", "operations", "components"} {
		if _, ok := doc[k].(map[string]any); !ok {
			t.Fatalf("no %s section", k)
		}
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if k == "$ref" {
					ref, _ := e.(string)
					if resolve(doc, ref) == nil {
						t.Errorf("%s: $ref %q does not resolve", path, ref)
					}
					continue
				}
				walk(path+"/"+k, e)
			}
		case []any:
			for i, e := range x {
				walk(path+"/"+strconv.Itoa(i), e)
			}
		}
	}
	walk("#", doc)
	reParam := regexp.MustCompile(`\{(\w+)\}`)
	addresses := map[string]bool{}
	for name, ch := range doc["channels"].(map[string]any) {
		chm := ch.(map[string]any)
		addr, _ := chm["address"].(string)
		addresses[addr] = true
		params, _ := chm["parameters"].(map[string]any)
		for _, m := range reParam.FindAllStringSubmatch(addr, -1) {
			if params[m[1]] == nil {
				t.Errorf("channel %s: parameter %s not declared", name, m[1])
			}
		}
		if msgs, _ := chm["messages"].(map[string]any); len(msgs) == 0 {
			t.Errorf("channel %s has no messages", name)
		}
	}
	for name, op := range doc["operations"].(map[string]any) {
		opm := op.(map[string]any)
		if a := opm["action"]; a != "send" && a != "receive" {
			t.Errorf("operation %s: action %v", name, a)
		}
		if _, ok := opm["channel"].(map[string]any)["$ref"]; !ok {
			t.Errorf("operation %s names no channel", name)
		}
	}
	c := collect(t)
	for _, s := range c.serviceSubjects {
		if !addresses[s] {
			t.Errorf("no channel with address %s", s)
		}
	}
	for _, a := range []string{events.TaskPrefix + "{token}", events.CancelPrefix + "{token}", events.EventPrefix + "{name}"} {
		if !addresses[a] {
			t.Errorf("no channel with address %s", a)
		}
	}
}

func resolve(doc map[string]any, ref string) any {
	if !strings.HasPrefix(ref, "#/") {
		return nil
	}
	var cur any = doc
	for _, part := range strings.Split(ref[2:], "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")]
	}
	return cur
}
