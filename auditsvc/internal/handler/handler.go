package handler

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"portcullis.dev/auditsvc/internal/audit"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/rpc"
	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"
)

// Handler implements auditv1connect.AuditServiceHandler over an
// [audit.Service]. The zero value is not usable; call [New].
type Handler struct {
	svc    *audit.Service
	logger *slog.Logger
}

var _ auditv1connect.AuditServiceHandler = (*Handler)(nil)

// New returns a handler for svc. A nil logger discards; it logs a chain
// that VerifyChain finds broken. (Internal errors are logged, with their
// cause, by the kernel's observer: see rpc.Internal.)
func New(svc *audit.Service, logger *slog.Logger) *Handler {
	return &Handler{svc: svc, logger: logging.OrDiscard(logger)}
}

// Record appends a batch of events.
func (h *Handler) Record(ctx context.Context, req *connect.Request[auditv1.RecordRequest]) (*connect.Response[auditv1.RecordResponse], error) {
	events := make([]audit.NewEvent, len(req.Msg.GetEvents()))
	for i, e := range req.Msg.GetEvents() {
		var err error
		if events[i], err = newEventFromProto(i, e); err != nil {
			return nil, err
		}
	}
	results, err := h.svc.Record(ctx, events)
	if err != nil {
		return nil, h.connectError(ctx, err)
	}
	resp := &auditv1.RecordResponse{Results: make([]*auditv1.RecordResult, len(results))}
	for i, r := range results {
		resp.Results[i] = &auditv1.RecordResult{
			IdempotencyKey: r.IdempotencyKey, Duplicate: r.Duplicate, EventId: r.EventID.String(), Sequence: r.Sequence,
		}
	}
	return connect.NewResponse(resp), nil
}

// QueryEvents returns a page of matching events.
func (h *Handler) QueryEvents(ctx context.Context, req *connect.Request[auditv1.QueryEventsRequest]) (*connect.Response[auditv1.QueryEventsResponse], error) {
	filter, err := filterFromProto(req.Msg.GetFilter())
	if err != nil {
		return nil, err
	}
	page, err := h.svc.QueryEvents(ctx, audit.Query{
		Filter:      filter,
		OldestFirst: req.Msg.GetOldestFirst(),
		PageSize:    int(req.Msg.GetPageSize()),
		PageToken:   req.Msg.GetPageToken(),
	})
	if err != nil {
		return nil, h.connectError(ctx, err)
	}
	resp := &auditv1.QueryEventsResponse{Events: make([]*auditv1.Event, len(page.Events)), NextPageToken: page.NextPageToken}
	for i, e := range page.Events {
		resp.Events[i] = eventToProto(e)
	}
	return connect.NewResponse(resp), nil
}

// GetEvent returns one event.
func (h *Handler) GetEvent(ctx context.Context, req *connect.Request[auditv1.GetEventRequest]) (*connect.Response[auditv1.GetEventResponse], error) {
	if req.Msg.GetEventId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("event_id is required"))
	}
	id, err := uuid.Parse(req.Msg.GetEventId())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("event_id is not an event ID"))
	}
	e, err := h.svc.GetEvent(ctx, id)
	if err != nil {
		return nil, h.connectError(ctx, err)
	}
	return connect.NewResponse(&auditv1.GetEventResponse{Event: eventToProto(e)}), nil
}

// VerifyChain checks a range of the chain.
func (h *Handler) VerifyChain(ctx context.Context, req *connect.Request[auditv1.VerifyChainRequest]) (*connect.Response[auditv1.VerifyChainResponse], error) {
	res, err := h.svc.VerifyChain(ctx, req.Msg.GetStartSequence(), req.Msg.GetEndSequence())
	if err != nil {
		return nil, h.connectError(ctx, err)
	}
	if !res.OK {
		h.logger.WarnContext(ctx, "audit chain broken", "first_broken_sequence", res.FirstBroken)
	}
	return connect.NewResponse(&auditv1.VerifyChainResponse{
		Ok: res.OK, CheckedCount: res.Checked, FirstBrokenSequence: res.FirstBroken, LastHash: res.LastHash,
	}), nil
}

// ExportEvents streams matching events, oldest first.
func (h *Handler) ExportEvents(ctx context.Context, req *connect.Request[auditv1.ExportEventsRequest], stream *connect.ServerStream[auditv1.ExportEventsResponse]) error {
	filter, err := filterFromProto(req.Msg.GetFilter())
	if err != nil {
		return err
	}
	err = h.svc.ExportEvents(ctx, filter, req.Msg.GetAfterSequence(), func(e *audit.Event) error {
		return stream.Send(&auditv1.ExportEventsResponse{Event: eventToProto(e)})
	})
	if err != nil {
		return h.connectError(ctx, err)
	}
	return nil
}

// connectError is the one place domain errors become Connect codes. Domain
// validation messages are ours and safe to show; anything else is logged and
// answered as a bare internal error, so no SQL or driver text leaks.
func (h *Handler) connectError(ctx context.Context, err error) error {
	var ce *connect.Error
	switch {
	case errors.Is(err, audit.ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, audit.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, audit.ErrNotFound)
	case errors.Is(err, audit.ErrCorrupt):
		return connect.NewError(connect.CodeDataLoss, err)
	case errors.As(err, &ce):
		return ce // from the stream: the client went away
	}
	if cerr, ok := rpc.TransientError(ctx, err); ok {
		return cerr
	}
	return rpc.Internal(err)
}
