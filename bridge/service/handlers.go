package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/pe-bridge/pe-bridge/engine"
)

var defaultWithToken = engine.WithToken

// lookupTimeout bounds the query that finds the instance of a failed or
// timed-out blocking start.
const lookupTimeout = 5 * time.Second

// ownerScanPage and ownerScanMax bound the client-side actualOwnerId filter:
// the engine has no such parameter, so the service pages through the
// matching user tasks (at most ownerScanMax of them).
const (
	ownerScanPage = 500
	ownerScanMax  = 50000
)

func (s *Service) processStart(ctx context.Context, data []byte) (any, error) {
	c, e := decodeStart(data, s.cfg.MaxStartTimeout)
	if e != nil {
		return nil, e
	}
	timeout := c.timeout
	if timeout == 0 {
		timeout = s.cfg.RequestTimeout
		if c.blocking() {
			timeout = s.cfg.StartTimeout
		}
	}
	// A correlation id of our own lets the service find the instance of a
	// blocking start that timed out or failed (the engine names it only on
	// success).
	if c.req.CorrelationID == "" {
		c.req.CorrelationID = uuid.NewString()
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := s.eng.StartProcess(cctx, c.req)
	if err != nil {
		se := *mapError(err)
		if cctx.Err() != nil && ctx.Err() == nil {
			se = Error{Code: CodeGatewayTimeout,
				Message: fmt.Sprintf("the process instance did not reach its end within %s; it keeps running", timeout)}
		}
		se.CorrelationID = c.req.CorrelationID
		if c.blocking() && (se.Code == CodeGatewayTimeout || se.Code == CodeProcessError || se.Code == CodeConflict || se.Code == CodeInternal) {
			se.ProcessInstanceID = s.findInstance(ctx, c.req.ProcessModelID, c.req.CorrelationID)
		}
		return nil, &se
	}
	reply := StartReply{ProcessInstanceID: res.ProcessInstanceID, CorrelationID: res.CorrelationID}
	if reply.CorrelationID == "" {
		reply.CorrelationID = c.req.CorrelationID
	}
	if c.blocking() {
		reply.EndEventID = res.EndEventID
		reply.TokenPayload = res.TokenPayload
		if isNull(reply.TokenPayload) {
			reply.TokenPayload = json.RawMessage("null")
		}
	}
	return reply, nil
}

// findInstance returns the id of the only instance of model with
// correlation id corr, or "" when there is none, several, or the query fails.
func (s *Service) findInstance(ctx context.Context, model, corr string) string {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	list, err := s.eng.QueryProcessInstances(lctx, engine.ProcessInstanceQuery{
		ProcessModelID: []string{model}, CorrelationID: []string{corr}, Limit: 2})
	if err != nil {
		s.log.Debug("service: looking up instance of a failed start", "correlation_id", corr, "error", err)
		return ""
	}
	if len(list.ProcessInstances) != 1 {
		return ""
	}
	return list.ProcessInstances[0].ProcessInstanceID
}

func (s *Service) processTerminate(ctx context.Context, data []byte) (any, error) {
	r, e := decodeProcessRef(data)
	if e != nil {
		return nil, e
	}
	if err := s.eng.TerminateProcessInstance(ctx, r.ProcessInstanceID); err != nil {
		return nil, err
	}
	return r, nil
}

func (s *Service) processGet(ctx context.Context, data []byte) (any, error) {
	r, e := decodeProcessRef(data)
	if e != nil {
		return nil, e
	}
	list, err := s.eng.QueryProcessInstances(ctx, engine.ProcessInstanceQuery{ProcessInstanceID: []string{r.ProcessInstanceID}})
	if err != nil {
		return nil, err
	}
	for _, pi := range list.ProcessInstances {
		if pi.ProcessInstanceID == r.ProcessInstanceID {
			return pi, nil
		}
	}
	return nil, &Error{Code: CodeNotFound, Message: fmt.Sprintf("process instance %q not found", truncate(r.ProcessInstanceID, 128))}
}

func (s *Service) processQuery(ctx context.Context, data []byte) (any, error) {
	r, e := decodeProcessQuery(data)
	if e != nil {
		return nil, e
	}
	list, err := s.eng.QueryProcessInstances(ctx, engine.ProcessInstanceQuery{
		ProcessInstanceID: opt(r.ProcessInstanceID),
		ProcessModelID:    opt(r.ProcessModelID),
		CorrelationID:     opt(r.CorrelationID),
		State:             opt(r.State),
		Offset:            r.Offset,
		Limit:             r.Limit,
	})
	if err != nil {
		return nil, err
	}
	out := ProcessQueryReply{ProcessInstances: list.ProcessInstances, TotalCount: list.TotalCount}
	if out.ProcessInstances == nil {
		out.ProcessInstances = []engine.ProcessInstance{}
	}
	return out, nil
}

func opt(v string) []string {
	if v == "" {
		return nil
	}
	return []string{v}
}

func (s *Service) userTaskList(ctx context.Context, data []byte) (any, error) {
	r, e := decodeUserTaskList(data)
	if e != nil {
		return nil, e
	}
	q := engine.FlowNodeInstanceQuery{
		FlowNodeType:      []string{engine.UserTaskFlowNodeType},
		ProcessModelID:    opt(r.ProcessModelID),
		ProcessInstanceID: opt(r.ProcessInstanceID),
		CorrelationID:     opt(r.CorrelationID),
		FlowNodeID:        opt(r.FlowNodeID),
	}
	if r.State != "any" {
		q.State = []string{r.State}
	}
	if r.ActualOwnerID == "" {
		q.Offset, q.Limit = r.Offset, r.Limit
		list, err := s.eng.UserTasks(ctx, q)
		if err != nil {
			return nil, err
		}
		out := UserTaskListReply{UserTasks: make([]UserTask, 0, len(list.FlowNodeInstances)), TotalCount: list.TotalCount}
		for _, fni := range list.FlowNodeInstances {
			out.UserTasks = append(out.UserTasks, userTask(fni))
		}
		if out.TotalCount < len(out.UserTasks) {
			out.TotalCount = len(out.UserTasks)
		}
		return out, nil
	}
	// The engine cannot filter on the reserving owner: scan and filter here,
	// then page the filtered list.
	var matched []UserTask
	q.Limit = ownerScanPage
	for scanned := 0; scanned < ownerScanMax; {
		list, err := s.eng.UserTasks(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, fni := range list.FlowNodeInstances {
			if fni.ActualOwnerID == r.ActualOwnerID {
				matched = append(matched, userTask(fni))
			}
		}
		n := len(list.FlowNodeInstances)
		scanned += n
		q.Offset += n
		if n < ownerScanPage || n > ownerScanPage || (list.TotalCount > 0 && q.Offset >= list.TotalCount) {
			break
		}
	}
	out := UserTaskListReply{TotalCount: len(matched), UserTasks: []UserTask{}}
	if r.Offset < len(matched) {
		matched = matched[r.Offset:]
		if r.Limit > 0 && r.Limit < len(matched) {
			matched = matched[:r.Limit]
		}
		out.UserTasks = matched
	}
	return out, nil
}

func userTask(f engine.FlowNodeInstance) UserTask {
	t := UserTask{
		UserTaskInstanceID: f.FlowNodeInstanceID,
		FlowNodeID:         f.FlowNodeID,
		FlowNodeName:       f.FlowNodeName,
		FlowNodeLane:       f.FlowNodeLane,
		ProcessModelID:     f.ProcessModelID,
		ProcessInstanceID:  f.ProcessInstanceID,
		CorrelationID:      f.CorrelationID,
		State:              f.State,
		Token:              f.StartToken,
		FormFields:         []engine.FormField{},
		ActualOwnerID:      f.ActualOwnerID,
		AssignedUserIDs:    f.AssignedUserIDs,
		FinishedByUserID:   f.FinishedByUserID,
		StartedAt:          f.StartedAt,
		FinishedAt:         f.FinishedAt,
	}
	if !isNull(f.EndToken) {
		t.Result = f.EndToken
	}
	if isNull(t.Token) {
		t.Token = nil
	}
	if c := f.UserTaskConfig; c != nil {
		if c.FormFields != nil {
			t.FormFields = c.FormFields
		}
		t.Description = c.Description
		if len(t.AssignedUserIDs) == 0 {
			t.AssignedUserIDs = c.AssignedUserIDs
		}
	}
	return t
}

func (s *Service) userTaskGet(ctx context.Context, data []byte) (any, error) {
	r, e := decodeUserTaskRef(data)
	if e != nil {
		return nil, e
	}
	list, err := s.eng.UserTasks(ctx, engine.FlowNodeInstanceQuery{
		FlowNodeInstanceID: []string{r.UserTaskInstanceID},
		FlowNodeType:       []string{engine.UserTaskFlowNodeType},
	})
	if err != nil {
		return nil, err
	}
	for _, fni := range list.FlowNodeInstances {
		if fni.FlowNodeInstanceID == r.UserTaskInstanceID {
			return userTask(fni), nil
		}
	}
	return nil, &Error{Code: CodeNotFound, Message: fmt.Sprintf("user task %q not found", truncate(r.UserTaskInstanceID, 128))}
}

func (s *Service) userTaskReserve(ctx context.Context, data []byte) (any, error) {
	r, e := decodeReserve(data)
	if e != nil {
		return nil, e
	}
	if err := s.eng.ReserveUserTask(ctx, r.UserTaskInstanceID, r.ActualOwnerID); err != nil {
		return nil, err
	}
	return r, nil
}

func (s *Service) userTaskCancelReservation(ctx context.Context, data []byte) (any, error) {
	r, e := decodeUserTaskRef(data)
	if e != nil {
		return nil, e
	}
	if err := s.eng.CancelUserTaskReservation(ctx, r.UserTaskInstanceID); err != nil {
		return nil, err
	}
	return r, nil
}

func (s *Service) userTaskFinish(ctx context.Context, data []byte) (any, error) {
	r, e := decodeFinish(data)
	if e != nil {
		return nil, e
	}
	if err := s.eng.FinishUserTask(ctx, r.UserTaskInstanceID, r.Result); err != nil {
		return nil, err
	}
	return UserTaskRef{UserTaskInstanceID: r.UserTaskInstanceID}, nil
}

func (s *Service) messageTrigger(ctx context.Context, data []byte) (any, error) {
	return s.trigger(ctx, data, s.eng.TriggerMessage)
}

func (s *Service) signalTrigger(ctx context.Context, data []byte) (any, error) {
	return s.trigger(ctx, data, s.eng.TriggerSignal)
}

func (s *Service) trigger(ctx context.Context, data []byte, fire func(context.Context, string, json.RawMessage, string) error) (any, error) {
	r, e := decodeTrigger(data)
	if e != nil {
		return nil, e
	}
	if err := fire(ctx, r.Name, r.Payload, r.ProcessInstanceID); err != nil {
		return nil, err
	}
	return TriggerReply{Name: r.Name, ProcessInstanceID: r.ProcessInstanceID}, nil
}

// deadlineError turns err into a 504 when ctx's own deadline passed (the
// engine client may report its cut-off call as a transport error).
func deadlineError(ctx context.Context, err error) error {
	if err == nil || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return err
	}
	var se *Error
	if errors.As(err, &se) {
		return err
	}
	return &Error{Code: CodeGatewayTimeout, Message: "timed out waiting for the engine"}
}
