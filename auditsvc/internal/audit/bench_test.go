package audit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"portcullis.dev/auditsvc/internal/audit"
)

// BenchmarkRecord measures Record's ingest rate, database-bound, for
// batches of 1 and 500 events, against a baseline measured in the same run:
// the same rows written with one single-row INSERT (and commit) each, the
// way an unbatched writer would. Each sub-benchmark reports events/s and
// the ratio to the baseline; the goal is batch=500 at 10x the baseline or
// more, and 20,000 events/s or more.
func BenchmarkRecord(b *testing.B) {
	ctx := context.Background()
	baseline := singleRowRate(b, 2000)
	b.Logf("baseline: single-row INSERTs, %.0f events/s", baseline)
	for _, size := range []int{1, 500} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := newStore(b)
			var n int
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				_, err := s.svc.Record(ctx, batch(fmt.Sprintf("b%d", i), i*size, size))
				if err != nil {
					b.Fatal(err)
				}
				n += size
			}
			rate := float64(n) / b.Elapsed().Seconds()
			b.ReportMetric(rate, "events/s")
			b.ReportMetric(baseline, "baseline-events/s")
			b.ReportMetric(rate/baseline, "x-baseline")
		})
	}
}

// singleRowRate writes n events as n single-row INSERT statements, each its
// own transaction, and returns the events per second.
func singleRowRate(b *testing.B, n int) float64 {
	b.Helper()
	s := newStore(b)
	ctx := context.Background()
	prev := audit.GenesisHash()
	rows := make([]*audit.Event, n)
	for i, ne := range batch("base", 0, n) {
		e := &audit.Event{
			ID: uuid.Must(uuid.NewV7()), Sequence: int64(i + 1), Time: ne.Time, RecordTime: time.Now().UTC().Truncate(time.Microsecond),
			ActorType: ne.ActorType, ActorID: ne.ActorID, Action: ne.Action, Target: ne.Target, Outcome: ne.Outcome,
			SourceIP: ne.SourceIP, UserAgent: ne.UserAgent, RequestID: ne.RequestID, Metadata: ne.Metadata,
			IdempotencyKey: ne.IdempotencyKey, PreviousHash: prev,
		}
		e.Hash = audit.ComputeHash(prev, e)
		prev, rows[i] = e.Hash, e
	}
	start := time.Now()
	for _, e := range rows {
		_, err := s.db.DB.ExecContext(ctx, `INSERT INTO audit_log (id, sequence, time, record_time, actor_type, actor_id,
			action, target, outcome, source_ip, user_agent, request_id, metadata, idempotency_key, previous_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
			e.ID, e.Sequence, e.Time, e.RecordTime, int16(e.ActorType), e.ActorID, e.Action, e.Target, int16(e.Outcome),
			e.SourceIP, e.UserAgent, e.RequestID, `{"reason":"test"}`, e.IdempotencyKey, e.PreviousHash, e.Hash)
		require.NoError(b, err)
	}
	return float64(n) / time.Since(start).Seconds()
}
