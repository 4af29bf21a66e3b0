package audit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/auditsvc/internal/audit"
)

func TestQueryEvents(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	_, err := s.svc.Record(ctx, batch("svc", 0, 30)) // event i has sequence i+1
	require.NoError(t, err)
	extra := newEvent("odd", 30)
	extra.Action = "auth.login_x" // `_` must not act as a LIKE wildcard
	_, err = s.svc.Record(ctx, []audit.NewEvent{extra})
	require.NoError(t, err)

	seqs := func(evs []*audit.Event) []int64 {
		out := make([]int64, len(evs))
		for i, e := range evs {
			out[i] = e.Sequence
		}
		return out
	}
	tests := []struct {
		name   string
		filter audit.Filter
		want   []int64 // oldest first
	}{
		{"action prefix", audit.Filter{Action: "identity."}, []int64{3, 6, 9, 12, 15, 18, 21, 24, 27, 30}},
		{"exact action", audit.Filter{Action: "auth.login.failed"}, []int64{2, 5, 8, 11, 14, 17, 20, 23, 26, 29}},
		{"underscore is literal", audit.Filter{Action: "auth.login_"}, []int64{31}},
		{"actor", audit.Filter{ActorType: audit.ActorUser, ActorID: "user-1", Action: "auth.login.failed"}, []int64{2, 5, 8, 11, 14, 17, 20, 23, 26, 29}},
		{"other actor type", audit.Filter{ActorType: audit.ActorService}, []int64{}},
		{"target", audit.Filter{Target: "user:4"}, []int64{5, 10, 15, 20, 25, 30}},
		{"outcome", audit.Filter{Outcome: audit.OutcomeDenied, Target: "user:4"}, []int64{15, 30}},
		{"request", audit.Filter{RequestID: "req-6"}, []int64{7, 14, 21, 28}},
		{"time range", audit.Filter{StartTime: epoch.Add(10 * time.Second), EndTime: epoch.Add(13 * time.Second)}, []int64{11, 12, 13}},
		// The log keeps microseconds: a bound between two is the next one.
		{"time range within microseconds", audit.Filter{StartTime: epoch.Add(10*time.Second + 400), EndTime: epoch.Add(13*time.Second + 400)}, []int64{12, 13, 14}},
		{"PostgreSQL's whole time range", audit.Filter{
			StartTime: time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC), // 4714 BC
			EndTime:   time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC),
			Target:    "user:4",
		}, []int64{5, 10, 15, 20, 25, 30}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			page, err := s.svc.QueryEvents(ctx, audit.Query{Filter: tt.filter, OldestFirst: true})
			require.NoError(t, err)
			assert.Equal(t, tt.want, seqs(page.Events))
			assert.Empty(t, page.NextPageToken)
		})
	}

	t.Run("pages newest first", func(t *testing.T) {
		t.Parallel()
		var got []int64
		q := audit.Query{Filter: audit.Filter{Action: "auth."}, PageSize: 7}
		for {
			page, err := s.svc.QueryEvents(ctx, q)
			require.NoError(t, err)
			assert.LessOrEqual(t, len(page.Events), 7)
			got = append(got, seqs(page.Events)...)
			if page.NextPageToken == "" {
				break
			}
			q.PageToken = page.NextPageToken
		}
		assert.Len(t, got, 21)
		assert.IsNonIncreasing(t, got)
		assert.Equal(t, int64(31), got[0])
	})
	t.Run("page token bound to its filter", func(t *testing.T) {
		t.Parallel()
		page, err := s.svc.QueryEvents(ctx, audit.Query{PageSize: 5})
		require.NoError(t, err)
		require.NotEmpty(t, page.NextPageToken)
		_, err = s.svc.QueryEvents(ctx, audit.Query{PageSize: 5, OldestFirst: true, PageToken: page.NextPageToken})
		assert.ErrorIs(t, err, audit.ErrInvalid)
		_, err = s.svc.QueryEvents(ctx, audit.Query{PageToken: "!!"})
		assert.ErrorIs(t, err, audit.ErrInvalid)
		_, err = s.svc.QueryEvents(ctx, audit.Query{PageSize: -1})
		assert.ErrorIs(t, err, audit.ErrInvalid)
	})
	t.Run("filters PostgreSQL cannot take", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name   string
			filter audit.Filter
			field  string
		}{
			{"NUL in actor_id", audit.Filter{ActorID: "user-\x00"}, "actor_id"},
			{"invalid UTF-8 in action", audit.Filter{Action: "auth.\xff"}, "action"},
			{"NUL in target", audit.Filter{Target: "user:\x00"}, "target"},
			{"invalid UTF-8 in request_id", audit.Filter{RequestID: "req-\xc3"}, "request_id"},
			{"start_time after PostgreSQL's range", audit.Filter{StartTime: time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)}, "start_time"},
			{"end_time before PostgreSQL's range", audit.Filter{EndTime: time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC)}, "end_time"},
			{"end_time past PostgreSQL's range once in microseconds", audit.Filter{EndTime: time.Date(294276, 12, 31, 23, 59, 59, 999999500, time.UTC)}, "end_time"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := s.svc.QueryEvents(ctx, audit.Query{Filter: tt.filter})
				require.ErrorIs(t, err, audit.ErrInvalid)
				assert.ErrorContains(t, err, tt.field)
				err = s.svc.ExportEvents(ctx, tt.filter, 0, func(*audit.Event) error { return nil })
				require.ErrorIs(t, err, audit.ErrInvalid)
				assert.ErrorContains(t, err, tt.field)
			})
		}
	})
	t.Run("page size capped", func(t *testing.T) {
		t.Parallel()
		capped := audit.NewService(s.db.DB, s.db.Ent, s.schema, audit.WithConfig(audit.Config{MaxPageSize: 4}))
		page, err := capped.QueryEvents(ctx, audit.Query{PageSize: 1000})
		require.NoError(t, err)
		assert.Len(t, page.Events, 4)
	})
	t.Run("get", func(t *testing.T) {
		t.Parallel()
		page, err := s.svc.QueryEvents(ctx, audit.Query{PageSize: 1})
		require.NoError(t, err)
		got, err := s.svc.GetEvent(ctx, page.Events[0].ID)
		require.NoError(t, err)
		assert.Equal(t, page.Events[0], got)
		_, err = s.svc.GetEvent(ctx, uuid.New())
		assert.ErrorIs(t, err, audit.ErrNotFound)
	})
	t.Run("export resumes after a sequence", func(t *testing.T) {
		t.Parallel()
		chunked := audit.NewService(s.db.DB, s.db.Ent, s.schema, audit.WithConfig(audit.Config{ReadChunk: 4}))
		var got []int64
		require.NoError(t, chunked.ExportEvents(ctx, audit.Filter{}, 20, func(e *audit.Event) error {
			got = append(got, e.Sequence)
			return nil
		}))
		assert.Equal(t, []int64{21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}, got)
	})
}

// TestExportEndsAtTheLogsEndAtTheStart: a log growing as fast as the
// client reads must not keep an export running.
func TestExportEndsAtTheLogsEndAtTheStart(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	_, err := s.svc.Record(ctx, batch("svc", 0, 8))
	require.NoError(t, err)
	chunked := audit.NewService(s.db.DB, s.db.Ent, s.schema, audit.WithConfig(audit.Config{ReadChunk: 4}))
	var got []int64
	require.NoError(t, chunked.ExportEvents(ctx, audit.Filter{}, 0, func(e *audit.Event) error {
		got = append(got, e.Sequence)
		if len(got) > 100 {
			return errors.New("the export does not end")
		}
		// Another event for each one read, a chunk's worth for each chunk.
		_, err := s.svc.Record(ctx, []audit.NewEvent{newEvent(fmt.Sprint("more-", e.Sequence), 100)})
		return err
	}))
	assert.Equal(t, []int64{1, 2, 3, 4, 5, 6, 7, 8}, got)
}
