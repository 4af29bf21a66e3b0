package flows_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"
)

// trailEvent is what a test expects of one audit event: who did what to
// what, and how it ended. Actor is "user:<id>", "service:<name>" or
// "anonymous".
type trailEvent struct {
	Actor, Action, Target string
	Outcome               auditv1.Outcome
}

// summary is the part of e a test can predict.
func summary(e *auditv1.Event) trailEvent {
	actor := "anonymous"
	switch e.GetActor().GetType() {
	case auditv1.ActorType_ACTOR_TYPE_USER:
		actor = "user:" + e.GetActor().GetId()
	case auditv1.ActorType_ACTOR_TYPE_SERVICE:
		actor = "service:" + e.GetActor().GetId()
	}
	return trailEvent{Actor: actor, Action: e.GetAction(), Target: e.GetTarget(), Outcome: e.GetOutcome()}
}

// auditTrail is the list of audit events a run of steps must leave, in the
// order the steps caused them. Each service's outbox delivers on its own,
// so events of different services may be recorded in another order than
// they happened; [auditTrail.expect] therefore waits until each event is
// recorded before the run goes on, which makes the order of the whole log
// (not only each service's) the order of the run.
type auditTrail struct {
	audit auditv1connect.AuditServiceClient
	token string // an access token holding audit.events.read
	since time.Time
	want  []trailEvent
}

// expect adds an event to the trail and waits until the Audit service has
// recorded it; it returns the recorded event, for its metadata.
func (a *auditTrail) expect(t *testing.T, actor, action, target string, outcome auditv1.Outcome) *auditv1.Event {
	t.Helper()
	ev := trailEvent{Actor: actor, Action: action, Target: target, Outcome: outcome}
	a.want = append(a.want, ev)
	n := 0
	for _, w := range a.want {
		if w.Action == action && w.Target == target {
			n++
		}
	}
	var got []*auditv1.Event
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		// Action filters by prefix: keep the exact action only.
		res, err := a.audit.QueryEvents(t.Context(), bearer(a.token, &auditv1.QueryEventsRequest{
			Filter:      &auditv1.EventFilter{Action: action, Target: target, StartTime: timestamppb.New(a.since)},
			OldestFirst: true,
			PageSize:    1000,
		}))
		require.NoError(c, err)
		got = got[:0]
		for _, e := range res.Msg.GetEvents() {
			if e.GetAction() == action {
				got = append(got, e)
			}
		}
		assert.GreaterOrEqual(c, len(got), n, "%s on %s not recorded", action, target)
	}, 30*time.Second, 20*time.Millisecond)
	return got[n-1]
}

// recorded is every event whose time is at or after the trail's start,
// in the log's order.
func (a *auditTrail) recorded(t *testing.T) []*auditv1.Event {
	t.Helper()
	var events []*auditv1.Event
	page := ""
	for {
		res, err := a.audit.QueryEvents(t.Context(), bearer(a.token, &auditv1.QueryEventsRequest{
			Filter:      &auditv1.EventFilter{StartTime: timestamppb.New(a.since)},
			OldestFirst: true,
			PageSize:    1000,
			PageToken:   page,
		}))
		require.NoError(t, err)
		events = append(events, res.Msg.GetEvents()...)
		if page = res.Msg.GetNextPageToken(); page == "" {
			return events
		}
	}
}
