package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"
)

// Record appends events to the log in one transaction, in order, and says
// per event whether it was new. An event whose idempotency key is already in
// the log (a redelivery), or earlier in the same batch, is not recorded
// again: its result names the earlier event. The batch is validated as a
// whole first; one invalid event fails the call with [ErrInvalid] and
// records nothing.
func (s *Service) Record(ctx context.Context, events []NewEvent) ([]RecordResult, error) {
	switch {
	case len(events) == 0:
		return nil, invalid("events are required")
	case len(events) > s.cfg.MaxBatchSize:
		return nil, invalid("more than %d events in one batch", s.cfg.MaxBatchSize)
	}
	norm := make([]NewEvent, len(events))
	for i, e := range events {
		n, err := normalize(e, s.cfg)
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		norm[i] = n
	}

	// Redeliveries are rare, so the first attempt does not look the keys up:
	// the INSERT skips keys already present (it probes the unique index
	// anyway), and only if it skipped any is the batch planned again, in a
	// new transaction, with the lookup.
	results, err := s.record(ctx, norm, false)
	if errors.Is(err, errDuplicates) {
		results, err = s.record(ctx, norm, true)
	}
	return results, err
}

// errDuplicates means the optimistic attempt met keys already recorded.
var errDuplicates = errors.New("record: the batch holds recorded keys")

// record appends events in one transaction. Without lookup it assumes no
// key was recorded before and fails with errDuplicates, writing nothing,
// when one was.
func (s *Service) record(ctx context.Context, events []NewEvent, lookup bool) ([]RecordResult, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("record: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	results, rows, err := s.plan(ctx, tx, events, lookup)
	if err != nil {
		return nil, err
	}
	if len(rows) > 0 {
		inserted, err := insertRows(ctx, tx, rows)
		if err != nil {
			return nil, err
		}
		if inserted != int64(len(rows)) {
			if lookup {
				// Impossible under the chain lock; refuse rather than leave a gap.
				return nil, fmt.Errorf("record: inserted %d of %d events", inserted, len(rows))
			}
			return nil, errDuplicates
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("record: commit: %w", err)
	}
	return results, nil
}

// plan takes the chain lock and turns the batch into results and the rows to
// insert, chained onto the current head.
func (s *Service) plan(ctx context.Context, tx *sql.Tx, events []NewEvent, lookup bool) ([]RecordResult, []*Event, error) {
	// Held until commit or rollback: every replica's appends queue here, so
	// each reads the head the previous one wrote and the chain never forks.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, s.lockKey); err != nil {
		return nil, nil, fmt.Errorf("record: take the chain lock: %w", err)
	}
	keys := make([]string, len(events))
	for i, e := range events {
		keys[i] = e.IdempotencyKey
	}
	seen := make(map[string]RecordResult, len(events))
	if lookup {
		var err error
		if seen, err = existing(ctx, tx, keys); err != nil {
			return nil, nil, err
		}
	}
	var (
		head     int64
		headHash []byte
	)
	err := tx.QueryRowContext(ctx, `SELECT sequence, hash FROM audit_log ORDER BY sequence DESC LIMIT 1`).Scan(&head, &headHash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		headHash = GenesisHash()
	case err != nil:
		return nil, nil, fmt.Errorf("record: read the chain head: %w", err)
	}

	recordTime := s.now().UTC().Truncate(time.Microsecond)
	results := make([]RecordResult, len(events))
	var rows []*Event
	for i, n := range events {
		if r, ok := seen[n.IdempotencyKey]; ok {
			results[i] = RecordResult{IdempotencyKey: n.IdempotencyKey, Duplicate: true, EventID: r.EventID, Sequence: r.Sequence}
			continue
		}
		id, err := uuid.NewV7()
		if err != nil {
			return nil, nil, fmt.Errorf("record: event id: %w", err)
		}
		head++
		e := &Event{
			ID: id, Sequence: head, Time: n.Time, RecordTime: recordTime,
			ActorType: n.ActorType, ActorID: n.ActorID, Action: n.Action, Target: n.Target,
			Outcome: n.Outcome, SourceIP: n.SourceIP, UserAgent: n.UserAgent, RequestID: n.RequestID,
			Metadata: n.Metadata, IdempotencyKey: n.IdempotencyKey, PreviousHash: headHash,
		}
		e.Hash = ComputeHash(headHash, e)
		headHash = e.Hash
		rows = append(rows, e)
		results[i] = RecordResult{IdempotencyKey: n.IdempotencyKey, EventID: id, Sequence: head}
		seen[n.IdempotencyKey] = results[i]
	}
	return results, rows, nil
}

// existing returns the events already recorded under any of keys.
func existing(ctx context.Context, tx *sql.Tx, keys []string) (map[string]RecordResult, error) {
	rows, err := tx.QueryContext(ctx, `SELECT idempotency_key, id, sequence FROM audit_log WHERE idempotency_key = ANY($1::text[])`, pq.StringArray(keys))
	if err != nil {
		return nil, fmt.Errorf("record: look up idempotency keys: %w", err)
	}
	defer rows.Close()
	seen := make(map[string]RecordResult, len(keys))
	for rows.Next() {
		var r RecordResult
		if err := rows.Scan(&r.IdempotencyKey, &r.EventID, &r.Sequence); err != nil {
			return nil, fmt.Errorf("record: look up idempotency keys: %w", err)
		}
		seen[r.IdempotencyKey] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("record: look up idempotency keys: %w", err)
	}
	return seen, nil
}

// insertColumns are the log's columns in the order insertRows binds them.
const insertColumns = `id, sequence, time, record_time, actor_type, actor_id, action, target, outcome,
	source_ip, user_agent, request_id, metadata, idempotency_key, previous_hash, hash`

// insertRows writes rows with one INSERT, skipping any whose idempotency key
// is already recorded, and returns how many it wrote. Each column travels as
// one array parameter and unnest turns them back into rows, so a batch costs
// one round trip and one statement whatever its size.
func insertRows(ctx context.Context, tx *sql.Tx, rows []*Event) (int64, error) {
	var (
		ids, times, recordTimes, actorIDs, actions, targets = make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows))
		sourceIPs, userAgents, requestIDs, metadata, keys   = make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows))
		sequences, actorTypes, outcomes                     = make([]int64, len(rows)), make([]int64, len(rows)), make([]int64, len(rows))
		prevHashes, hashes                                  = make(pq.ByteaArray, len(rows)), make(pq.ByteaArray, len(rows))
	)
	for i, e := range rows {
		md, err := json.Marshal(nonNil(e.Metadata))
		if err != nil {
			return 0, fmt.Errorf("record: encode metadata: %w", err)
		}
		ids[i], sequences[i] = e.ID.String(), e.Sequence
		times[i], recordTimes[i] = e.Time.Format(time.RFC3339Nano), e.RecordTime.Format(time.RFC3339Nano)
		actorTypes[i], actorIDs[i], actions[i], targets[i] = int64(e.ActorType), e.ActorID, e.Action, e.Target
		outcomes[i], sourceIPs[i], userAgents[i], requestIDs[i] = int64(e.Outcome), e.SourceIP, e.UserAgent, e.RequestID
		metadata[i], keys[i], prevHashes[i], hashes[i] = string(md), e.IdempotencyKey, e.PreviousHash, e.Hash
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO audit_log (`+insertColumns+`)
		SELECT * FROM unnest($1::uuid[], $2::int8[], $3::timestamptz[], $4::timestamptz[], $5::int2[], $6::text[],
			$7::text[], $8::text[], $9::int2[], $10::text[], $11::text[], $12::text[], $13::jsonb[], $14::text[],
			$15::bytea[], $16::bytea[])
		ON CONFLICT (idempotency_key) DO NOTHING`,
		pq.StringArray(ids), pq.Int64Array(sequences), pq.StringArray(times), pq.StringArray(recordTimes),
		pq.Int64Array(actorTypes), pq.StringArray(actorIDs), pq.StringArray(actions), pq.StringArray(targets),
		pq.Int64Array(outcomes), pq.StringArray(sourceIPs), pq.StringArray(userAgents), pq.StringArray(requestIDs),
		pq.StringArray(metadata), pq.StringArray(keys), prevHashes, hashes)
	if err != nil {
		return 0, fmt.Errorf("record: insert %d events: %w", len(rows), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("record: insert %d events: %w", len(rows), err)
	}
	return n, nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
