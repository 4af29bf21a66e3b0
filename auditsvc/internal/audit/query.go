package audit

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"portcullis.dev/auditsvc/ent"
	"portcullis.dev/auditsvc/ent/auditlog"
	"portcullis.dev/auditsvc/ent/predicate"
	"portcullis.dev/kernel/database"
)

// Filter selects events; zero fields match anything, set fields combine
// with AND.
type Filter struct {
	ActorType ActorType
	ActorID   string
	// Action matches events whose action starts with it.
	Action    string
	Target    string
	Outcome   Outcome
	StartTime time.Time // inclusive
	EndTime   time.Time // exclusive
	RequestID string
}

// check refuses a filter PostgreSQL cannot compare with the log: text it
// cannot hold, or a time outside its range, fails the query, and the caller
// would see an internal error for a request that can never succeed.
func (f Filter) check() error {
	for _, t := range []struct{ field, value string }{
		{"actor_id", f.ActorID}, {"action", f.Action}, {"target", f.Target}, {"request_id", f.RequestID},
	} {
		if !database.ValidText(t.value) {
			return invalid("filter.%s holds NUL or invalid UTF-8", t.field)
		}
	}
	for _, t := range []struct {
		field string
		value time.Time
	}{{"start_time", f.StartTime}, {"end_time", f.EndTime}} {
		if !database.ValidTime(ceilMicrosecond(t.value)) { // as compared: see predicates
			return invalid("filter.%s must be between 4714-11-24 BC and 294276-12-31", t.field)
		}
	}
	return nil
}

func (f Filter) predicates() []predicate.AuditLog {
	var ps []predicate.AuditLog
	if f.ActorType != ActorUnspecified {
		ps = append(ps, auditlog.ActorType(int16(f.ActorType)))
	}
	if f.ActorID != "" {
		ps = append(ps, auditlog.ActorID(f.ActorID))
	}
	if f.Action != "" {
		ps = append(ps, auditlog.ActionHasPrefix(f.Action)) // LIKE with % and _ escaped
	}
	if f.Target != "" {
		ps = append(ps, auditlog.Target(f.Target))
	}
	if f.Outcome != OutcomeUnspecified {
		ps = append(ps, auditlog.Outcome(int16(f.Outcome)))
	}
	// Both bounds up to the next microsecond, what the log keeps:
	// PostgreSQL would round them to the nearest, and an event at T would
	// be in a range starting at T+400ns, and out of one ending there.
	if !f.StartTime.IsZero() {
		ps = append(ps, auditlog.TimeGTE(ceilMicrosecond(f.StartTime)))
	}
	if !f.EndTime.IsZero() {
		ps = append(ps, auditlog.TimeLT(ceilMicrosecond(f.EndTime)))
	}
	if f.RequestID != "" {
		ps = append(ps, auditlog.RequestID(f.RequestID))
	}
	return ps
}

func ceilMicrosecond(t time.Time) time.Time {
	if down := t.Truncate(time.Microsecond); !down.Equal(t) {
		return down.Add(time.Microsecond)
	}
	return t
}

// Query asks for one page of events.
type Query struct {
	Filter      Filter
	OldestFirst bool
	// PageSize zero means the configured default; larger than the maximum
	// means the maximum.
	PageSize  int
	PageToken string
}

// Page is one page of a query's events.
type Page struct {
	Events []*Event
	// NextPageToken fetches the next page; empty on the last one.
	NextPageToken string
}

// QueryEvents returns a page of the events that match q, newest first
// unless q.OldestFirst. Pages are keyed by sequence, and events are only
// appended, so paging never skips or repeats an event.
func (s *Service) QueryEvents(ctx context.Context, q Query) (*Page, error) {
	switch {
	case q.PageSize < 0:
		return nil, invalid("page_size must not be negative")
	case q.PageSize == 0:
		q.PageSize = s.cfg.DefaultPageSize
	case q.PageSize > s.cfg.MaxPageSize:
		q.PageSize = s.cfg.MaxPageSize
	}
	if err := q.Filter.check(); err != nil {
		return nil, err
	}
	fp := q.fingerprint()
	ps := q.Filter.predicates()
	if q.PageToken != "" {
		after, err := parsePageToken(q.PageToken, fp)
		if err != nil {
			return nil, err
		}
		if q.OldestFirst {
			ps = append(ps, auditlog.SequenceGT(after))
		} else {
			ps = append(ps, auditlog.SequenceLT(after))
		}
	}
	order := ent.Desc(auditlog.FieldSequence)
	if q.OldestFirst {
		order = ent.Asc(auditlog.FieldSequence)
	}
	rows, err := s.ent.AuditLog.Query().Where(ps...).Order(order).Limit(q.PageSize + 1).All(ctx)
	if err != nil {
		return nil, readError("query events", err)
	}
	page := &Page{}
	if len(rows) > q.PageSize {
		rows = rows[:q.PageSize]
		page.NextPageToken = pageToken(rows[len(rows)-1].Sequence, fp)
	}
	page.Events = make([]*Event, len(rows))
	for i, r := range rows {
		if page.Events[i], err = shown(r); err != nil {
			return nil, fmt.Errorf("query events: %w", err)
		}
	}
	return page, nil
}

// fingerprint ties a page token to the filter and order it was made for.
func (q Query) fingerprint() string {
	f := q.Filter
	h := fnv.New64a()
	fmt.Fprintf(h, "%d\x00%q\x00%q\x00%q\x00%d\x00%d\x00%d\x00%q\x00%t", f.ActorType, f.ActorID, f.Action, f.Target,
		f.Outcome, unixNanos(f.StartTime), unixNanos(f.EndTime), f.RequestID, q.OldestFirst)
	return strconv.FormatUint(h.Sum64(), 36)
}

func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// pageToken is opaque to callers: base64url of "<sequence>.<fingerprint>".
func pageToken(seq int64, fp string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(seq, 10) + "." + fp))
}

func parsePageToken(tok, fp string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, invalid("page_token is malformed")
	}
	seqText, tokFP, ok := strings.Cut(string(b), ".")
	seq, err := strconv.ParseInt(seqText, 10, 64)
	switch {
	case !ok || err != nil || seq < 0:
		return 0, invalid("page_token is malformed")
	case tokFP != fp:
		return 0, invalid("page_token belongs to a different filter or order")
	}
	return seq, nil
}

// GetEvent returns the event with id, or [ErrNotFound].
func (s *Service) GetEvent(ctx context.Context, id uuid.UUID) (*Event, error) {
	row, err := s.ent.AuditLog.Get(ctx, id)
	switch {
	case ent.IsNotFound(err):
		return nil, ErrNotFound
	case err != nil:
		return nil, readError("get event", err)
	}
	e, err := shown(row)
	if err != nil {
		return nil, fmt.Errorf("get event: %w", err)
	}
	return e, nil
}

// ExportEvents calls send with every event recorded by the time of the
// call that matches f and has a sequence greater than after, oldest first,
// reading the log a chunk at a time. It stops at the first error send
// returns, and returns it.
func (s *Service) ExportEvents(ctx context.Context, f Filter, after int64, send func(*Event) error) error {
	if after < 0 {
		return invalid("after_sequence must not be negative")
	}
	if err := f.check(); err != nil {
		return err
	}
	// The end is fixed now: a log that grows as fast as the client reads
	// would otherwise never let the export end.
	head, err := s.head(ctx)
	if err != nil {
		return fmt.Errorf("export events: %w", err)
	}
	ps := append(f.predicates(), auditlog.SequenceLTE(head))
	for {
		rows, err := s.ent.AuditLog.Query().
			Where(append(ps, auditlog.SequenceGT(after))...).
			Order(ent.Asc(auditlog.FieldSequence)).Limit(s.cfg.ReadChunk).All(ctx)
		sendRow := func(r *ent.AuditLog) (bool, error) {
			e, err := shown(r)
			if err != nil {
				return false, fmt.Errorf("export events: %w", err)
			}
			if err := send(e); err != nil {
				return false, err
			}
			after = r.Sequence
			return true, nil
		}
		if isUnreadable(err) {
			// Send the events before the one that cannot be read.
			bad, err := s.readOneByOne(ctx, append(ps, auditlog.SequenceGT(after)), sendRow)
			switch {
			case err != nil:
				return err
			case bad != 0:
				return fmt.Errorf("export events: event %d: %w", bad, ErrCorrupt)
			}
			return errors.New("export events: an unreadable event became readable")
		}
		if err != nil {
			return readError("export events", err)
		}
		for _, r := range rows {
			if _, err := sendRow(r); err != nil {
				return err
			}
		}
		if len(rows) < s.cfg.ReadChunk {
			return nil
		}
	}
}

// VerifyChain recomputes the hashes of the events from start to end
// (inclusive; zero start means the first event, zero end the latest at the
// time of the call) and reports the first one that does not verify. A range
// that starts after the first event trusts its first event's previous hash.
func (s *Service) VerifyChain(ctx context.Context, start, end int64) (VerifyResult, error) {
	switch {
	case start < 0 || end < 0:
		return VerifyResult{}, invalid("sequences must not be negative")
	case end != 0 && end < start:
		return VerifyResult{}, invalid("end_sequence is before start_sequence")
	}
	if start <= 1 {
		// Chains start at 1, and a CHECK keeps new rows there; one below
		// was there before it, or put there by whoever may drop it.
		var low sql.NullInt64
		if err := s.db.QueryRowContext(ctx, `SELECT min(sequence) FROM audit_log WHERE sequence < 1`).Scan(&low); err != nil {
			return VerifyResult{}, fmt.Errorf("verify chain: %w", err)
		}
		if low.Valid {
			return VerifyResult{Checked: 1, FirstBroken: low.Int64}, nil
		}
	}
	start = max(start, 1)
	if end == 0 {
		// Fix the end now, so a busy log does not keep the check running.
		head, err := s.head(ctx)
		if err != nil {
			return VerifyResult{}, fmt.Errorf("verify chain: %w", err)
		}
		if start > head+1 {
			// The log ends before the event this range trusts: those an
			// auditor verified up to start-1 are gone.
			return VerifyResult{FirstBroken: head + 1}, nil // nothing was there to check
		}
		end = head
	}
	v := NewVerifier(start)
	for next := start; next <= end; {
		rows, err := s.ent.AuditLog.Query().
			Where(auditlog.SequenceGTE(next), auditlog.SequenceLTE(end)).
			Order(ent.Asc(auditlog.FieldSequence)).Limit(s.cfg.ReadChunk).All(ctx)
		if isUnreadable(err) {
			// A row changed into something the schema cannot hold: find
			// which, and report the chain broken there.
			return s.verifyRowByRow(ctx, v, next, end)
		}
		if err != nil {
			return VerifyResult{}, fmt.Errorf("verify chain: %w", err)
		}
		if len(rows) == 0 {
			// Events the range should hold are missing.
			v.Add(&Event{Sequence: -1})
			break
		}
		for _, r := range rows {
			if !v.Add(fromRow(r)) {
				return v.Result(), nil
			}
		}
		next = rows[len(rows)-1].Sequence + 1
	}
	return v.Result(), nil
}

// verifyRowByRow goes on verifying from next, one event at a time, up to
// the first that cannot be read, where the chain is broken.
func (s *Service) verifyRowByRow(ctx context.Context, v *Verifier, next, end int64) (VerifyResult, error) {
	bad, err := s.readOneByOne(ctx, []predicate.AuditLog{auditlog.SequenceGTE(next), auditlog.SequenceLTE(end)},
		func(r *ent.AuditLog) (bool, error) { return v.Add(fromRow(r)), nil })
	switch {
	case err != nil:
		return VerifyResult{}, fmt.Errorf("verify chain: %w", err)
	case bad != 0:
		v.Add(&Event{Sequence: bad}) // no hash: broken here
	case v.Result().OK:
		// Read one by one, every row was readable after all: it changed
		// while being checked, which an append-only log does not do.
		return VerifyResult{}, errors.New("verify chain: an unreadable event became readable")
	}
	return v.Result(), nil
}

// readOneByOne reads up to a chunk of the events preds select, in sequence
// order and one at a time, and gives each to fn until fn says to stop; the
// first that cannot be read (see isUnreadable) it returns the sequence of
// instead. It is how a read that met such an event in a chunk goes on up
// to it. fn's errors are returned as they are.
func (s *Service) readOneByOne(ctx context.Context, preds []predicate.AuditLog, fn func(*ent.AuditLog) (bool, error)) (unreadable int64, err error) {
	seqs, err := s.ent.AuditLog.Query().Where(preds...).Order(ent.Asc(auditlog.FieldSequence)).
		Limit(s.cfg.ReadChunk).Select(auditlog.FieldSequence).Ints(ctx)
	if err != nil {
		return 0, fmt.Errorf("read events one by one: %w", err)
	}
	for _, seq := range seqs {
		r, err := s.ent.AuditLog.Query().Where(auditlog.Sequence(int64(seq))).Only(ctx)
		switch {
		case isUnreadable(err):
			return int64(seq), nil
		case err != nil:
			return 0, fmt.Errorf("read events one by one: %w", err)
		}
		if goOn, err := fn(r); err != nil || !goOn {
			return 0, err
		}
	}
	return 0, nil
}

// isUnreadable reports whether err says that a stored event does not fit
// the schema, as only a change made behind the service's back can make it.
func isUnreadable(err error) bool {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	return errors.As(err, &typeErr) || errors.As(err, &syntaxErr)
}

// head returns the sequence of the latest event, zero when there is none.
func (s *Service) head(ctx context.Context) (int64, error) {
	var head int64
	if err := s.db.QueryRowContext(ctx, `SELECT coalesce(max(sequence), 0) FROM audit_log`).Scan(&head); err != nil {
		return 0, fmt.Errorf("read the chain head: %w", err)
	}
	return head, nil
}

// shown returns the event r holds, or [ErrCorrupt] for one no chain check
// covers: below sequence 1, or with times its hash does not cover (see
// hashable), which a caller could not be shown anyway (the contract's
// timestamps end in 9999).
func shown(r *ent.AuditLog) (*Event, error) {
	e := fromRow(r)
	if e.Sequence < 1 || !hashable(e.Time) || !hashable(e.RecordTime) {
		return nil, fmt.Errorf("event %d: %w", e.Sequence, ErrCorrupt)
	}
	return e, nil
}

// readError wraps the error of a read of the log for op, as [ErrCorrupt]
// when a stored event does not fit the schema.
func readError(op string, err error) error {
	if isUnreadable(err) {
		return fmt.Errorf("%s: %w", op, ErrCorrupt)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func fromRow(r *ent.AuditLog) *Event {
	return &Event{
		ID: r.ID, Sequence: r.Sequence, Time: r.Time.UTC(), RecordTime: r.RecordTime.UTC(),
		ActorType: ActorType(r.ActorType), ActorID: r.ActorID, Action: r.Action, Target: r.Target,
		Outcome: Outcome(r.Outcome), SourceIP: r.SourceIP, UserAgent: r.UserAgent, RequestID: r.RequestID,
		Metadata: r.Metadata, IdempotencyKey: r.IdempotencyKey, PreviousHash: r.PreviousHash, Hash: r.Hash,
	}
}
