package audit

import (
	"math"
	"time"

	"github.com/google/uuid"

	"portcullis.dev/kernel/database"
)

// ActorType is what kind of party performed an action; the numbers are the
// contract's (portcullis.audit.v1.ActorType), and they are hashed.
type ActorType int16

// Actor types.
const (
	ActorUnspecified ActorType = 0
	ActorUser        ActorType = 1
	ActorService     ActorType = 2
	ActorAnonymous   ActorType = 3
)

// Outcome is how an action ended; the numbers are the contract's
// (portcullis.audit.v1.Outcome), and they are hashed.
type Outcome int16

// Outcomes.
const (
	OutcomeUnspecified Outcome = 0
	OutcomeSuccess     Outcome = 1
	OutcomeFailure     Outcome = 2
	OutcomeDenied      Outcome = 3
)

// NewEvent is an event as a service submits it.
type NewEvent struct {
	IdempotencyKey string
	Time           time.Time
	ActorType      ActorType
	ActorID        string
	Action         string
	Target         string
	Outcome        Outcome
	SourceIP       string
	UserAgent      string
	RequestID      string
	Metadata       map[string]string
}

// Event is a recorded event: a NewEvent with its place in the chain.
type Event struct {
	ID             uuid.UUID
	Sequence       int64
	Time           time.Time
	RecordTime     time.Time
	ActorType      ActorType
	ActorID        string
	Action         string
	Target         string
	Outcome        Outcome
	SourceIP       string
	UserAgent      string
	RequestID      string
	Metadata       map[string]string
	IdempotencyKey string
	PreviousHash   []byte
	Hash           []byte
}

// RecordResult is what Record did with one event.
type RecordResult struct {
	IdempotencyKey string
	// Duplicate is true when the key was recorded before (or earlier in the
	// same batch) and nothing was recorded for this event.
	Duplicate bool
	// EventID and Sequence name the recorded event: the new one, or the
	// earlier one for a duplicate.
	EventID  uuid.UUID
	Sequence int64
}

// The chain hashes an event's time as int64 nanoseconds since the Unix
// epoch (CHAIN.md), which cannot hold every time PostgreSQL can: an event
// outside these whole seconds would be stored with a hash no verifier could
// recompute from its time.
var (
	minEventTime = time.Unix(math.MinInt64/int64(time.Second), 0).UTC()
	maxEventTime = time.Unix(math.MaxInt64/int64(time.Second), 0).UTC()
)

// Field limits of the contract (portcullis.audit.v1.NewEvent) and of sanity.
const (
	maxKeyBytes       = 200
	maxUserAgentBytes = 512
	maxShortBytes     = 256 // action, target, actor ID, request ID, source IP
)

// normalize checks e against the contract and cfg and returns it as it will
// be stored: times in UTC to the microsecond (PostgreSQL's precision, so the
// hash computed now matches the row read back) and the user agent truncated
// to 512 bytes.
func normalize(e NewEvent, cfg Config) (NewEvent, error) {
	switch {
	case e.IdempotencyKey == "":
		return e, invalid("idempotency_key is required")
	case len(e.IdempotencyKey) > maxKeyBytes:
		return e, invalid("idempotency_key is longer than %d bytes", maxKeyBytes)
	case e.Time.IsZero():
		return e, invalid("time is required")
	case e.Time.Before(minEventTime) || e.Time.After(maxEventTime):
		return e, invalid("time must be between %s and %s", minEventTime.Format(time.RFC3339), maxEventTime.Format(time.RFC3339))
	case e.Action == "":
		return e, invalid("action is required")
	case e.ActorType < ActorUser || e.ActorType > ActorAnonymous:
		return e, invalid("actor.type is required")
	case e.ActorType != ActorAnonymous && e.ActorID == "":
		return e, invalid("actor.id is required for a user or service actor")
	case e.Outcome < OutcomeSuccess || e.Outcome > OutcomeDenied:
		return e, invalid("outcome is required")
	case len(e.Metadata) > cfg.MaxMetadataEntries:
		return e, invalid("metadata has more than %d entries", cfg.MaxMetadataEntries)
	}
	for name, v := range map[string]string{
		"action": e.Action, "target": e.Target, "actor.id": e.ActorID,
		"request_id": e.RequestID, "source_ip": e.SourceIP,
	} {
		if len(v) > maxShortBytes {
			return e, invalid("%s is longer than %d bytes", name, maxShortBytes)
		}
	}
	size := 0
	for k, v := range e.Metadata {
		if k == "" {
			return e, invalid("metadata has an empty key")
		}
		size += len(k) + len(v)
	}
	if size > cfg.MaxMetadataBytes {
		return e, invalid("metadata is larger than %d bytes", cfg.MaxMetadataBytes)
	}
	e.UserAgent = database.TruncateText(e.UserAgent, maxUserAgentBytes)
	for _, s := range e.texts() {
		if !database.ValidText(s) {
			return e, invalid("a text field holds NUL or invalid UTF-8")
		}
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	return e, nil
}

func (e NewEvent) texts() []string {
	s := []string{e.IdempotencyKey, e.ActorID, e.Action, e.Target, e.SourceIP, e.UserAgent, e.RequestID}
	for k, v := range e.Metadata {
		s = append(s, k, v)
	}
	return s
}
