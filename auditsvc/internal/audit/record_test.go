package audit_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/auditsvc/internal/audit"
)

func TestRecordChainsGapFree(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	for b := range 3 {
		res, err := s.svc.Record(ctx, batch("svc", b*10, 10))
		require.NoError(t, err)
		require.Len(t, res, 10)
		for i, r := range res {
			assert.False(t, r.Duplicate)
			assert.Equal(t, int64(b*10+i+1), r.Sequence)
		}
	}
	page, err := s.svc.QueryEvents(ctx, audit.Query{OldestFirst: true, PageSize: 1000})
	require.NoError(t, err)
	require.Len(t, page.Events, 30)
	prev := audit.GenesisHash()
	for i, e := range page.Events {
		assert.Equal(t, int64(i+1), e.Sequence)
		assert.Equal(t, prev, e.PreviousHash)
		assert.Equal(t, audit.ComputeHash(prev, e), e.Hash)
		prev = e.Hash
	}
	res, err := s.svc.VerifyChain(ctx, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, audit.VerifyResult{OK: true, Checked: 30, LastHash: prev, LastSequence: 30}, res)

	res, err = s.svc.VerifyChain(ctx, 11, 20)
	require.NoError(t, err)
	assert.Equal(t, audit.VerifyResult{OK: true, Checked: 10, LastHash: page.Events[19].Hash, LastSequence: 20}, res)
}

func TestRecordIsIdempotent(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	first, err := s.svc.Record(ctx, batch("svc", 0, 5))
	require.NoError(t, err)

	// The same batch again, as after a lost answer: nothing new.
	again, err := s.svc.Record(ctx, batch("svc", 0, 5))
	require.NoError(t, err)
	for i := range again {
		assert.True(t, again[i].Duplicate)
		assert.Equal(t, first[i].EventID, again[i].EventID)
		assert.Equal(t, first[i].Sequence, again[i].Sequence)
	}
	n, maxSeq := s.count(t)
	assert.Equal(t, int64(5), n)
	assert.Equal(t, int64(5), maxSeq)

	// Half old, half new, and a key twice in the same batch.
	mixed := append(batch("svc", 3, 4), newEvent("svc:5", 5))
	res, err := s.svc.Record(ctx, mixed)
	require.NoError(t, err)
	dup := make([]bool, len(res))
	seqs := make([]int64, len(res))
	for i, r := range res {
		dup[i], seqs[i] = r.Duplicate, r.Sequence
	}
	assert.Equal(t, []bool{true, true, false, false, true}, dup)
	assert.Equal(t, []int64{4, 5, 6, 7, 6}, seqs)
	assert.Equal(t, res[2].EventID, res[4].EventID)

	v, err := s.svc.VerifyChain(ctx, 0, 0)
	require.NoError(t, err)
	assert.True(t, v.OK)
	assert.Equal(t, int64(7), v.Checked)

	// A key replayed with other content is no duplicate: taken for one, its
	// sender would mark it delivered and it would be lost.
	changed := func(key string, i int, change func(*audit.NewEvent)) audit.NewEvent {
		e := newEvent(key, i)
		change(&e)
		return e
	}
	for name, evs := range map[string][]audit.NewEvent{
		"other action":          {changed("svc:1", 1, func(e *audit.NewEvent) { e.Action = "auth.login.other" })},
		"other time":            {changed("svc:1", 1, func(e *audit.NewEvent) { e.Time = e.Time.Add(time.Microsecond) })},
		"other metadata":        {changed("svc:1", 1, func(e *audit.NewEvent) { e.Metadata = nil })},
		"twice in a batch, new": {newEvent("svc:9", 9), changed("svc:9", 9, func(e *audit.NewEvent) { e.Target = "x" })},
	} {
		_, err := s.svc.Record(ctx, evs)
		assert.ErrorIs(t, err, audit.ErrInvalid, name)
	}
	n, maxSeq = s.count(t)
	assert.Equal(t, int64(7), n, "a refused batch recorded something")
	assert.Equal(t, int64(7), maxSeq)
}

func TestRecordValidates(t *testing.T) {
	t.Parallel()
	s := newStore(t, audit.WithConfig(audit.Config{MaxBatchSize: 10, MaxMetadataEntries: 4, MaxMetadataBytes: 64}))
	ctx := context.Background()
	mod := func(f func(e *audit.NewEvent)) []audit.NewEvent {
		e := newEvent("k", 1)
		f(&e)
		return []audit.NewEvent{newEvent("ok", 0), e}
	}
	tests := []struct {
		name   string
		events []audit.NewEvent
	}{
		{"empty batch", nil},
		{"too many events", batch("b", 0, 11)},
		{"no idempotency key", mod(func(e *audit.NewEvent) { e.IdempotencyKey = "" })},
		{"long idempotency key", mod(func(e *audit.NewEvent) { e.IdempotencyKey = strings.Repeat("k", 201) })},
		{"no action", mod(func(e *audit.NewEvent) { e.Action = "" })},
		{"no time", mod(func(e *audit.NewEvent) { e.Time = time.Time{} })},
		{"no actor type", mod(func(e *audit.NewEvent) { e.ActorType = audit.ActorUnspecified })},
		{"user without id", mod(func(e *audit.NewEvent) { e.ActorID = "" })},
		{"no outcome", mod(func(e *audit.NewEvent) { e.Outcome = audit.OutcomeUnspecified })},
		{"unknown outcome", mod(func(e *audit.NewEvent) { e.Outcome = 9 })},
		{"too many metadata entries", mod(func(e *audit.NewEvent) { e.Metadata = map[string]string{"a": "", "b": "", "c": "", "d": "", "e": ""} })},
		{"oversized metadata", mod(func(e *audit.NewEvent) { e.Metadata = map[string]string{"a": strings.Repeat("x", 64)} })},
		{"empty metadata key", mod(func(e *audit.NewEvent) { e.Metadata = map[string]string{"": "x"} })},
		{"NUL in a field", mod(func(e *audit.NewEvent) { e.Target = "user:\x00" })},
		{"time after PostgreSQL's range", mod(func(e *audit.NewEvent) { e.Time = time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC) })},
		{"time before PostgreSQL's range", mod(func(e *audit.NewEvent) { e.Time = time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC) })},
		{"time after the chain's range", mod(func(e *audit.NewEvent) { e.Time = time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC) })},
		{"time before the chain's range", mod(func(e *audit.NewEvent) { e.Time = time.Date(1677, 1, 1, 0, 0, 0, 0, time.UTC) })},
		{"long target", mod(func(e *audit.NewEvent) { e.Target = strings.Repeat("t", 257) })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.svc.Record(ctx, tt.events)
			require.ErrorIs(t, err, audit.ErrInvalid)
		})
	}
	n, _ := s.count(t)
	assert.Zero(t, n, "an invalid batch records nothing")

	// Anonymous actors need no ID; long user agents are cut at 512 bytes.
	e := newEvent("anon", 1)
	e.ActorType, e.ActorID, e.UserAgent = audit.ActorAnonymous, "", strings.Repeat("é", 300)
	res, err := s.svc.Record(ctx, []audit.NewEvent{e})
	require.NoError(t, err)
	got, err := s.svc.GetEvent(ctx, res[0].EventID)
	require.NoError(t, err)
	assert.Len(t, got.UserAgent, 512)
}

// TestRecordKeepsTextExactly records texts that COPY's text format must
// escape, or could take for its NULL marker, and reads them back unchanged,
// hashes included.
func TestRecordKeepsTextExactly(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	tests := []struct {
		name string
		text string
	}{
		{"NULL marker", `\N`},
		{"backslashes", `C:\dir\file \. \x41`},
		{"control characters", "line\nnext\ttab\rreturn\b\f\v"},
		{"quotes and delimiters", `"quoted" 'single' a,b;c|d {json: "x"}`},
		{"unicode", "Grüße, 世界 🎉"},
		{"empty", ""},
	}
	events := make([]audit.NewEvent, len(tests))
	for i, tt := range tests {
		events[i] = newEvent(fmt.Sprintf("text:%d", i), i)
		events[i].Target = tt.text
		events[i].UserAgent = tt.text
		events[i].RequestID = tt.text
		events[i].Metadata = map[string]string{"text": tt.text, tt.text + "key": "value"}
	}
	res, err := s.svc.Record(ctx, events)
	require.NoError(t, err)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.svc.GetEvent(ctx, res[i].EventID)
			require.NoError(t, err)
			assert.Equal(t, tt.text, got.Target)
			assert.Equal(t, tt.text, got.UserAgent)
			assert.Equal(t, tt.text, got.RequestID)
			assert.Equal(t, map[string]string{"text": tt.text, tt.text + "key": "value"}, got.Metadata)
		})
	}
	v, err := s.svc.VerifyChain(ctx, 0, 0)
	require.NoError(t, err)
	assert.True(t, v.OK, "first broken: %d", v.FirstBroken)
}

// TestConcurrentWriters runs two replicas, each with its own pool, and many
// goroutines each: they must build one chain, without gaps or forks.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	second := openClient(t, s.url, s.schema)
	replicas := []*audit.Service{s.svc, audit.NewService(second.DB, second.Ent, s.schema)}

	const goroutines, batches = 8, 10
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		seqs  = map[int64]bool{}
	)
	for g := range goroutines {
		wg.Go(func() {
			svc := replicas[g%2]
			for b := range batches {
				n := 1 + (g+b)%7
				res, err := svc.Record(context.Background(), batch(fmt.Sprintf("g%d-b%d", g, b), 0, n))
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				total += n
				for _, r := range res {
					assert.False(t, seqs[r.Sequence], "sequence %d given twice", r.Sequence)
					seqs[r.Sequence] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	n, maxSeq := s.count(t)
	assert.Equal(t, int64(total), n)
	assert.Equal(t, int64(total), maxSeq, "sequences have no gaps")
	v, err := s.svc.VerifyChain(context.Background(), 0, 0)
	require.NoError(t, err)
	assert.True(t, v.OK, "first broken: %d", v.FirstBroken)
	assert.Equal(t, int64(total), v.Checked)
}
