package bpmn

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pe-bridge/pe-bridge/engine"
)

// Namespaces of the elements and attributes the parser reads. Elements are
// matched on their local name; camunda attributes must carry a namespace.
const (
	NSBPMN    = "http://www.omg.org/spec/BPMN/20100524/MODEL"
	NSCamunda = "http://camunda.org/schema/1.0/bpmn"
)

// ElementError is an invalid element of a BPMN file.
type ElementError struct {
	ElementID string // "" when the element has no id
	Reason    string
}

func (e *ElementError) Error() string {
	if e.ElementID == "" {
		return "bpmn: " + e.Reason
	}
	return fmt.Sprintf("bpmn: element %q: %s", e.ElementID, e.Reason)
}

func elemErr(id, format string, args ...any) error {
	return &ElementError{ElementID: id, Reason: fmt.Sprintf(format, args...)}
}

// elem is a generic XML element; it keeps document order.
type elem struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Children []elem     `xml:",any"`
	Text     string     `xml:",chardata"`
}

func (e *elem) attr(local string) string {
	for _, a := range e.Attrs {
		if a.Name.Local == local && (a.Name.Space == "" || a.Name.Space == NSBPMN) {
			return a.Value
		}
	}
	return ""
}

// cattr reads a namespaced (camunda) attribute.
func (e *elem) cattr(local string) string {
	for _, a := range e.Attrs {
		if a.Name.Local == local && a.Name.Space != "" && a.Name.Space != NSBPMN {
			return a.Value
		}
	}
	return ""
}

func (e *elem) child(local string) *elem {
	for i := range e.Children {
		if e.Children[i].XMLName.Local == local {
			return &e.Children[i]
		}
	}
	return nil
}

// MaxSize is the largest BPMN document Parse accepts.
const MaxSize = 16 << 20

// Parse parses a BPMN 2.0 document as Studio writes it (bpmn + camunda
// namespaces) and validates what the emulator executes. Errors are
// *ElementError values naming the element and the reason.
func Parse(data []byte) (*Definitions, error) {
	if len(data) > MaxSize {
		return nil, elemErr("", "document larger than %d bytes", MaxSize)
	}
	var root elem
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	if err := dec.Decode(&root); err != nil {
		return nil, &ElementError{Reason: "parsing xml: " + err.Error()}
	}
	if root.XMLName.Local != "definitions" {
		return nil, elemErr("", "root element is <%s>, want <bpmn:definitions>", root.XMLName.Local)
	}
	p := parser{
		errors:   map[string]*Error{},
		messages: map[string]string{},
		signals:  map[string]string{},
		partName: map[string]string{},
	}
	defs := &Definitions{ID: root.attr("id")}
	if defs.ID == "" {
		defs.ID = "Definitions"
	}
	for i := range root.Children {
		c := &root.Children[i]
		id := c.attr("id")
		switch c.XMLName.Local {
		case "error":
			p.errors[id] = &Error{ID: id, Name: c.attr("name"), Code: c.attr("errorCode"), Message: c.cattr("errorMessage")}
		case "message":
			p.messages[id] = c.attr("name")
		case "signal":
			p.signals[id] = c.attr("name")
		case "collaboration":
			for j := range c.Children {
				pc := &c.Children[j]
				if pc.XMLName.Local == "participant" && pc.attr("processRef") != "" {
					p.partName[pc.attr("processRef")] = pc.attr("name")
				}
			}
		}
	}
	seen := map[string]bool{}
	for i := range root.Children {
		c := &root.Children[i]
		if c.XMLName.Local != "process" {
			continue
		}
		proc, err := p.process(c, defs.ID)
		if err != nil {
			return nil, err
		}
		if seen[proc.ID] {
			return nil, elemErr(proc.ID, "duplicate process id")
		}
		seen[proc.ID] = true
		defs.Processes = append(defs.Processes, proc)
	}
	if len(defs.Processes) == 0 {
		return nil, elemErr(defs.ID, "no <bpmn:process> in definitions")
	}
	return defs, nil
}

type parser struct {
	errors   map[string]*Error
	messages map[string]string // id → name
	signals  map[string]string
	partName map[string]string // processRef → participant name
}

var nodeTypes = map[string]struct {
	kind Kind
	typ  string
}{
	"startEvent":             {KindStartEvent, "bpmn:StartEvent"},
	"endEvent":               {KindEndEvent, "bpmn:EndEvent"},
	"serviceTask":            {KindServiceTask, "bpmn:ServiceTask"},
	"userTask":               {KindUserTask, "bpmn:UserTask"},
	"task":                   {KindUntypedTask, "bpmn:Task"},
	"manualTask":             {KindManualTask, "bpmn:ManualTask"},
	"sendTask":               {KindTask, "bpmn:SendTask"},
	"businessRuleTask":       {KindTask, "bpmn:BusinessRuleTask"},
	"scriptTask":             {KindScriptTask, "bpmn:ScriptTask"},
	"receiveTask":            {KindReceiveTask, "bpmn:ReceiveTask"},
	"exclusiveGateway":       {KindExclusiveGateway, "bpmn:ExclusiveGateway"},
	"parallelGateway":        {KindParallelGateway, "bpmn:ParallelGateway"},
	"intermediateCatchEvent": {KindCatchEvent, "bpmn:IntermediateCatchEvent"},
	"intermediateThrowEvent": {KindThrowEvent, "bpmn:IntermediateThrowEvent"},
	"boundaryEvent":          {KindBoundaryEvent, "bpmn:BoundaryEvent"},
}

var unsupported = map[string]bool{
	"subProcess": true, "callActivity": true, "transaction": true, "adHocSubProcess": true,
	"inclusiveGateway": true, "eventBasedGateway": true, "complexGateway": true,
}

func (p *parser) process(pe *elem, defID string) (*Process, error) {
	proc := &Process{
		ID:           pe.attr("id"),
		Name:         pe.attr("name"),
		IsExecutable: pe.attr("isExecutable") != "false",
		DefinitionID: defID,
		ByID:         map[string]*Node{},
	}
	if proc.ID == "" {
		return nil, elemErr("", "process without id")
	}
	if proc.Name == "" {
		proc.Name = p.partName[proc.ID]
	}
	lanes := map[string]string{}
	collectLanes(pe, lanes, 0)

	type pendingFlow struct {
		e    *elem
		flow *Flow
	}
	var flows []pendingFlow
	type pendingNode struct {
		e *elem
		n *Node
	}
	var nodes []pendingNode
	for i := range pe.Children {
		c := &pe.Children[i]
		local := c.XMLName.Local
		id := c.attr("id")
		if unsupported[local] {
			return nil, elemErr(id, "<bpmn:%s> is not supported by the emulator", local)
		}
		if local == "sequenceFlow" {
			if id == "" {
				return nil, elemErr("", "sequenceFlow without id in process %q", proc.ID)
			}
			f := &Flow{ID: id, Name: c.attr("name")}
			if ce := c.child("conditionExpression"); ce != nil {
				f.Condition = strings.TrimSpace(ce.Text)
			}
			flows = append(flows, pendingFlow{c, f})
			continue
		}
		nt, ok := nodeTypes[local]
		if !ok {
			continue // laneSet, textAnnotation, association, data objects, ...
		}
		if id == "" {
			return nil, elemErr("", "<bpmn:%s> without id in process %q", local, proc.ID)
		}
		if proc.ByID[id] != nil {
			return nil, elemErr(id, "duplicate flow node id")
		}
		n := &Node{ID: id, Name: c.attr("name"), Type: nt.typ, Kind: nt.kind, Lane: lanes[id]}
		proc.ByID[id] = n
		proc.Nodes = append(proc.Nodes, n)
		nodes = append(nodes, pendingNode{c, n})
	}
	flowByID := map[string]*Flow{}
	for _, pf := range flows {
		f := pf.flow
		if flowByID[f.ID] != nil || proc.ByID[f.ID] != nil {
			return nil, elemErr(f.ID, "duplicate id")
		}
		flowByID[f.ID] = f
		src, tgt := pf.e.attr("sourceRef"), pf.e.attr("targetRef")
		f.Source, f.Target = proc.ByID[src], proc.ByID[tgt]
		if f.Source == nil {
			return nil, elemErr(f.ID, "sourceRef %q is not a flow node of process %q", src, proc.ID)
		}
		if f.Target == nil {
			return nil, elemErr(f.ID, "targetRef %q is not a flow node of process %q", tgt, proc.ID)
		}
		f.Source.Outgoing = append(f.Source.Outgoing, f)
		f.Target.Incoming = append(f.Target.Incoming, f)
		proc.Flows = append(proc.Flows, f)
	}
	for _, pn := range nodes {
		if err := p.node(proc, pn.e, pn.n, flowByID); err != nil {
			return nil, err
		}
	}
	for _, n := range proc.Nodes {
		if err := validateNode(n); err != nil {
			return nil, err
		}
		switch n.Kind {
		case KindStartEvent:
			proc.StartEvents = append(proc.StartEvents, n)
		case KindEndEvent:
			proc.EndEvents = append(proc.EndEvents, n)
		}
	}
	if len(proc.StartEvents) == 0 {
		return nil, elemErr(proc.ID, "process has no start event")
	}
	return proc, nil
}

func collectLanes(e *elem, lanes map[string]string, depth int) {
	if depth > 32 {
		return
	}
	for i := range e.Children {
		c := &e.Children[i]
		switch c.XMLName.Local {
		case "laneSet", "childLaneSet":
			collectLanes(c, lanes, depth+1)
		case "lane":
			name := c.attr("name")
			if name == "" {
				name = c.attr("id")
			}
			for j := range c.Children {
				r := &c.Children[j]
				if r.XMLName.Local == "flowNodeRef" {
					lanes[strings.TrimSpace(r.Text)] = name
				}
			}
			collectLanes(c, lanes, depth+1)
		}
	}
}

func (p *parser) node(proc *Process, e *elem, n *Node, flows map[string]*Flow) error {
	if def := e.attr("default"); def != "" {
		f := flows[def]
		if f == nil || f.Source != n {
			return elemErr(n.ID, "default flow %q is not an outgoing sequence flow of this element", def)
		}
		n.Default = f
	}
	for i := range e.Children {
		c := &e.Children[i]
		switch c.XMLName.Local {
		case "documentation":
			n.Documentation = append(n.Documentation, strings.TrimSpace(c.Text))
		case "extensionElements":
			if err := p.extensions(n, c); err != nil {
				return err
			}
		case "script":
			n.Script = c.Text
		}
	}
	switch n.Kind {
	case KindStartEvent, KindEndEvent, KindCatchEvent, KindThrowEvent, KindBoundaryEvent:
		if err := p.eventDef(n, e); err != nil {
			return err
		}
	case KindReceiveTask:
		if ref := e.attr("messageRef"); ref != "" {
			name, ok := p.messages[ref]
			if !ok {
				return elemErr(n.ID, "messageRef %q names no <bpmn:message>", ref)
			}
			n.MessageName = name
			n.EventDef = DefMessage
		} else {
			return elemErr(n.ID, "receive task without messageRef")
		}
	}
	if n.Kind == KindServiceTask {
		if e.cattr("type") == "external" {
			n.External = true
			n.Topic = e.cattr("topic")
			if n.Topic == "" {
				return elemErr(n.ID, "external service task has no camunda:topic")
			}
		}
		if n.External {
			n.Payload = strings.TrimSpace(n.Properties["payload"])
			switch v := strings.TrimSpace(n.Properties["engine.isSingleTry"]); v {
			case "", "false":
			case "true":
				n.IsSingleTry = true
			default:
				return elemErr(n.ID, "engine.isSingleTry must be true or false, got %q", v)
			}
		}
	}
	if n.Kind == KindUserTask {
		n.CustomForm = n.Properties["customForm"]
		if n.CustomForm == "" {
			n.CustomForm = "DynamicForm"
		}
		n.Description = n.Properties["description"]
		n.FinishedMessage = n.Properties["finishedMessage"]
		n.AssignUserIDs = n.Properties["engine.assignUserIds"]
	}
	if n.Kind == KindBoundaryEvent {
		ref := e.attr("attachedToRef")
		host := proc.ByID[ref]
		if host == nil {
			return elemErr(n.ID, "attachedToRef %q is not a flow node of process %q", ref, proc.ID)
		}
		if !host.IsActivity() {
			return elemErr(n.ID, "boundary event attached to %q, which is not an activity", ref)
		}
		n.AttachedTo = host
		n.CancelActivity = e.attr("cancelActivity") != "false"
		host.Boundaries = append(host.Boundaries, n)
		switch n.EventDef {
		case DefError, DefTimer, DefMessage, DefSignal:
		default:
			return elemErr(n.ID, "boundary event needs an error, timer, message or signal event definition")
		}
		if n.EventDef == DefError && !n.CancelActivity {
			return elemErr(n.ID, "error boundary events are always interrupting")
		}
	}
	return nil
}

func (p *parser) extensions(n *Node, ext *elem) error {
	for i := range ext.Children {
		c := &ext.Children[i]
		switch c.XMLName.Local {
		case "properties":
			for j := range c.Children {
				pr := &c.Children[j]
				if pr.XMLName.Local != "property" {
					continue
				}
				if n.Properties == nil {
					n.Properties = map[string]string{}
				}
				name := pr.attr("name")
				if name == "" {
					return elemErr(n.ID, "camunda:property without name")
				}
				n.Properties[name] = pr.attr("value")
			}
		case "formData":
			for j := range c.Children {
				ff := &c.Children[j]
				if ff.XMLName.Local != "formField" {
					continue
				}
				f := engine.FormField{
					ID:           ff.attr("id"),
					Label:        ff.attr("label"),
					Type:         ff.attr("type"),
					DefaultValue: ff.attr("defaultValue"),
					CustomForm:   ff.attr("customForm"),
				}
				if f.ID == "" {
					return elemErr(n.ID, "camunda:formField without id")
				}
				if f.Type == "" {
					f.Type = "string"
				}
				if f.CustomForm != "" && json.Valid([]byte(f.CustomForm)) {
					f.ParsedCustomForm = json.RawMessage(f.CustomForm)
				}
				for k := range ff.Children {
					v := &ff.Children[k]
					if v.XMLName.Local == "value" {
						f.EnumValues = append(f.EnumValues, engine.FormFieldEnumValue{ID: v.attr("id"), Name: v.attr("name")})
					}
				}
				n.FormFields = append(n.FormFields, f)
			}
		}
	}
	return nil
}

func (p *parser) eventDef(n *Node, e *elem) error {
	count := 0
	for i := range e.Children {
		c := &e.Children[i]
		local := c.XMLName.Local
		if !strings.HasSuffix(local, "EventDefinition") {
			continue
		}
		count++
		if count > 1 {
			return elemErr(n.ID, "more than one event definition")
		}
		switch local {
		case "messageEventDefinition":
			ref := c.attr("messageRef")
			name, ok := p.messages[ref]
			if !ok {
				return elemErr(n.ID, "messageRef %q names no <bpmn:message>", ref)
			}
			if name == "" {
				name = ref
			}
			n.EventDef, n.MessageName = DefMessage, name
		case "signalEventDefinition":
			ref := c.attr("signalRef")
			name, ok := p.signals[ref]
			if !ok {
				return elemErr(n.ID, "signalRef %q names no <bpmn:signal>", ref)
			}
			if name == "" {
				name = ref
			}
			n.EventDef, n.SignalName = DefSignal, name
		case "errorEventDefinition":
			n.EventDef = DefError
			if ref := c.attr("errorRef"); ref != "" {
				er, ok := p.errors[ref]
				if !ok {
					return elemErr(n.ID, "errorRef %q names no <bpmn:error>", ref)
				}
				n.Error = er
			}
		case "terminateEventDefinition":
			n.EventDef = DefTerminate
		case "timerEventDefinition":
			t, err := parseTimer(c)
			if err != nil {
				return elemErr(n.ID, "%v", err)
			}
			n.EventDef, n.Timer = DefTimer, t
		default:
			return elemErr(n.ID, "<bpmn:%s> is not supported by the emulator", local)
		}
	}
	switch n.Kind {
	case KindEndEvent:
		if n.EventDef != DefNone && n.EventDef != DefError && n.EventDef != DefTerminate &&
			n.EventDef != DefMessage && n.EventDef != DefSignal {
			return elemErr(n.ID, "end event with unsupported event definition")
		}
	case KindStartEvent:
		if n.EventDef == DefError || n.EventDef == DefTerminate {
			return elemErr(n.ID, "start event with unsupported event definition")
		}
	case KindCatchEvent:
		if n.EventDef == DefError || n.EventDef == DefTerminate {
			return elemErr(n.ID, "intermediate catch event with unsupported event definition")
		}
	}
	return nil
}

func parseTimer(c *elem) (*Timer, error) {
	for _, k := range []string{"timeDuration", "timeDate", "timeCycle"} {
		te := c.child(k)
		if te == nil {
			continue
		}
		v := strings.TrimSpace(te.Text)
		switch k {
		case "timeDuration":
			d, err := ParseDuration(v)
			if err != nil {
				return nil, err
			}
			return &Timer{Type: "duration", Value: v, Duration: d}, nil
		case "timeDate":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return nil, fmt.Errorf("timeDate %q is not an ISO-8601 date-time", v)
			}
			return &Timer{Type: "date", Value: v, Date: t}, nil
		default:
			return nil, errors.New("timeCycle timers are not supported by the emulator")
		}
	}
	return nil, errors.New("timer event definition without timeDuration or timeDate")
}

var durRe = regexp.MustCompile(`^P(?:(\d+(?:[.,]\d+)?)W)?(?:(\d+(?:[.,]\d+)?)D)?(?:T(?:(\d+(?:[.,]\d+)?)H)?(?:(\d+(?:[.,]\d+)?)M)?(?:(\d+(?:[.,]\d+)?)S)?)?$`)

// ParseDuration parses an ISO-8601 duration with weeks, days, hours, minutes
// and (fractional) seconds, such as PT2S, PT0.5S, P1DT2H. Years and months are
// rejected because their length is ambiguous.
func ParseDuration(s string) (time.Duration, error) {
	m := durRe.FindStringSubmatch(strings.ToUpper(strings.TrimSpace(s)))
	if m == nil || s == "P" || strings.HasSuffix(strings.ToUpper(s), "T") {
		return 0, fmt.Errorf("timeDuration %q is not an ISO-8601 duration like PT2S (years and months unsupported)", s)
	}
	units := []time.Duration{7 * 24 * time.Hour, 24 * time.Hour, time.Hour, time.Minute, time.Second}
	var total float64
	for i, u := range units {
		if m[i+1] == "" {
			continue
		}
		f, err := strconv.ParseFloat(strings.ReplaceAll(m[i+1], ",", "."), 64)
		if err != nil {
			return 0, fmt.Errorf("timeDuration %q: %v", s, err)
		}
		total += f * float64(u)
	}
	if total > float64(100*365*24*time.Hour) {
		return 0, fmt.Errorf("timeDuration %q is too long", s)
	}
	return time.Duration(total), nil
}

func validateNode(n *Node) error {
	switch n.Kind {
	case KindStartEvent:
		if len(n.Incoming) > 0 {
			return elemErr(n.ID, "start event has incoming sequence flows")
		}
	case KindEndEvent:
		if len(n.Outgoing) > 0 {
			return elemErr(n.ID, "end event has outgoing sequence flows")
		}
	case KindBoundaryEvent:
		if len(n.Incoming) > 0 {
			return elemErr(n.ID, "boundary event has incoming sequence flows")
		}
	}
	// A node without outgoing flows ends its token (implicit end), as BPMN allows.
	if n.Kind == KindExclusiveGateway && len(n.Outgoing) > 1 {
		for _, f := range n.Outgoing {
			if f.Condition == "" && f != n.Default {
				return elemErr(f.ID, "outgoing flow of exclusive gateway %q has neither a condition nor is it the default flow", n.ID)
			}
		}
	}
	if n.Kind == KindParallelGateway {
		for _, f := range n.Outgoing {
			if f.Condition != "" {
				return elemErr(f.ID, "conditions on outgoing flows of parallel gateway %q are not allowed", n.ID)
			}
		}
	}
	return nil
}
