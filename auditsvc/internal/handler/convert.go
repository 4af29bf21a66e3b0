package handler

import (
	"cmp"
	"fmt"
	"math"
	"time"

	"connectrpc.com/connect"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"portcullis.dev/auditsvc/internal/audit"
	auditv1 "portcullis.dev/proto/audit/v1"
)

func newEventFromProto(i int, e *auditv1.NewEvent) (audit.NewEvent, error) {
	t, ok := timeFromProto(e.GetTime())
	var err error
	if !ok { // named only then: Record converts thousands of events
		err = badTime(fmt.Sprintf("events[%d].time", i))
	}
	return audit.NewEvent{
		IdempotencyKey: e.GetIdempotencyKey(),
		Time:           t,
		ActorType:      narrow[audit.ActorType](e.GetActor().GetType()),
		ActorID:        e.GetActor().GetId(),
		Action:         e.GetAction(),
		Target:         e.GetTarget(),
		Outcome:        narrow[audit.Outcome](e.GetOutcome()),
		SourceIP:       e.GetSourceIp(),
		UserAgent:      e.GetUserAgent(),
		RequestID:      e.GetRequestId(),
		Metadata:       e.GetMetadata(),
	}, err
}

func filterFromProto(f *auditv1.EventFilter) (audit.Filter, error) {
	var serr, eerr error
	start, ok := timeFromProto(f.GetStartTime())
	if !ok {
		serr = badTime("filter.start_time")
	}
	end, ok := timeFromProto(f.GetEndTime())
	if !ok {
		eerr = badTime("filter.end_time")
	}
	return audit.Filter{
		ActorType: narrow[audit.ActorType](f.GetActorType()),
		ActorID:   f.GetActorId(),
		Action:    f.GetAction(),
		Target:    f.GetTarget(),
		Outcome:   narrow[audit.Outcome](f.GetOutcome()),
		StartTime: start,
		EndTime:   end,
		RequestID: f.GetRequestId(),
	}, cmp.Or(serr, eerr)
}

// narrow converts one of the contract's enums, an open int32, to the
// domain's int16 one. A number beyond int16 would wrap into a defined value
// (65537 into 1): it becomes -1, which no value is, so that an event is
// refused, a filter matches nothing and an exported event fails to verify.
func narrow[D ~int16, P ~int32](p P) D {
	if p < math.MinInt16 || p > math.MaxInt16 {
		return -1
	}
	return D(p)
}

// timeFromProto maps an unset timestamp to the zero time, which the domain
// reads as "not given". One whose nanos are out of range is refused:
// AsTime would carry them into the seconds, and another time than the one
// sent would be recorded, or compared.
func timeFromProto(ts *timestamppb.Timestamp) (time.Time, bool) {
	if ts == nil {
		return time.Time{}, true
	}
	if n := ts.GetNanos(); n < 0 || n >= 1e9 {
		return time.Time{}, false
	}
	return ts.AsTime(), true
}

// badTime is the error of a timestamp field that timeFromProto refused.
func badTime(field string) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: nanos must be from 0 to 999999999", field))
}

func eventToProto(e *audit.Event) *auditv1.Event {
	return &auditv1.Event{
		Id:             e.ID.String(),
		Sequence:       e.Sequence,
		Time:           timestamppb.New(e.Time),
		RecordTime:     timestamppb.New(e.RecordTime),
		Actor:          &auditv1.Actor{Type: auditv1.ActorType(e.ActorType), Id: e.ActorID},
		Action:         e.Action,
		Target:         e.Target,
		Outcome:        auditv1.Outcome(e.Outcome),
		SourceIp:       e.SourceIP,
		UserAgent:      e.UserAgent,
		RequestId:      e.RequestID,
		Metadata:       e.Metadata,
		IdempotencyKey: e.IdempotencyKey,
		PreviousHash:   e.PreviousHash,
		Hash:           e.Hash,
	}
}

// eventFromProto is the inverse of eventToProto, for reading exports. An ID
// that is not a UUID becomes the nil UUID, whose hash then fails to verify.
func eventFromProto(e *auditv1.Event) *audit.Event {
	id, _ := uuid.Parse(e.GetId())
	return &audit.Event{
		ID:             id,
		Sequence:       e.GetSequence(),
		Time:           e.GetTime().AsTime().UTC(),
		RecordTime:     e.GetRecordTime().AsTime().UTC(),
		ActorType:      narrow[audit.ActorType](e.GetActor().GetType()),
		ActorID:        e.GetActor().GetId(),
		Action:         e.GetAction(),
		Target:         e.GetTarget(),
		Outcome:        narrow[audit.Outcome](e.GetOutcome()),
		SourceIP:       e.GetSourceIp(),
		UserAgent:      e.GetUserAgent(),
		RequestID:      e.GetRequestId(),
		Metadata:       e.GetMetadata(),
		IdempotencyKey: e.GetIdempotencyKey(),
		PreviousHash:   e.GetPreviousHash(),
		Hash:           e.GetHash(),
	}
}
