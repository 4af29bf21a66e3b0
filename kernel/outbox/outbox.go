package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/rpc"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// Execer runs a statement in the caller's transaction: *sql.Tx, and an Ent
// transaction generated with the sql/execquery feature.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// channelPrefix + schema is the NOTIFY channel that wakes a schema's relay.
const channelPrefix = "portcullis_outbox_"

// Enqueue writes evs to the outbox in tx, to be delivered once tx commits,
// in one statement however many there are. An empty idempotency key is
// filled in. The relay is notified at commit.
func Enqueue(ctx context.Context, tx Execer, evs ...*auditv1.NewEvent) error {
	if len(evs) == 0 {
		return nil
	}
	keys := make([]string, len(evs))
	payloads := make([][]byte, len(evs))
	for i, ev := range evs {
		if ev.GetAction() == "" {
			return errors.New("outbox: event has no action")
		}
		if ev.IdempotencyKey == "" {
			ev.IdempotencyKey = newKey()
		}
		if ev.Time == nil {
			ev.Time = timestamppb.Now()
		}
		payload, err := proto.Marshal(ev)
		if err != nil {
			return fmt.Errorf("outbox: encode %s event: %w", ev.GetAction(), err)
		}
		keys[i], payloads[i] = ev.IdempotencyKey, payload
	}
	var err error
	if len(evs) == 1 {
		_, err = tx.ExecContext(ctx, `INSERT INTO `+Table+` (idempotency_key, payload, created_at) VALUES ($1, $2, $3)`,
			keys[0], payloads[0], time.Now())
	} else {
		// WITH ORDINALITY keeps the events' order in the ids the relay
		// delivers by.
		_, err = tx.ExecContext(ctx, `INSERT INTO `+Table+` (idempotency_key, payload, created_at)
			SELECT k, p, $3 FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS e(k, p, n) ORDER BY n`,
			pq.Array(keys), pq.Array(payloads), time.Now())
	}
	if err != nil {
		return fmt.Errorf("outbox: enqueue %d %s event(s): %w", len(evs), evs[0].GetAction(), err)
	}
	// NOTIFY is transactional: the relay hears it only if tx commits.
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1 || current_schema(), '')`, channelPrefix); err != nil {
		return fmt.Errorf("outbox: notify relay: %w", err)
	}
	return nil
}

// NewEvent returns an event for action on target by the caller of ctx (its
// principal, or anonymous), with the request ID and the original client's
// address and User-Agent of ctx, and the time now.
// metadata is copied; it must hold no secrets.
func NewEvent(ctx context.Context, action, target string, outcome auditv1.Outcome, metadata map[string]string) *auditv1.NewEvent {
	ev := &auditv1.NewEvent{
		IdempotencyKey: newKey(),
		Time:           timestamppb.Now(),
		Actor:          &auditv1.Actor{Type: auditv1.ActorType_ACTOR_TYPE_ANONYMOUS},
		Action:         action,
		Target:         target,
		Outcome:        outcome,
		RequestId:      logging.RequestID(ctx),
		SourceIp:       rpc.ClientIP(ctx),
		UserAgent:      rpc.ClientUserAgent(ctx),
	}
	if p, ok := authn.FromContext(ctx); ok {
		ev.Actor = &auditv1.Actor{Type: actorType(p.Kind), Id: p.Subject}
	}
	if len(metadata) > 0 {
		ev.Metadata = make(map[string]string, len(metadata))
		for k, v := range metadata {
			ev.Metadata[k] = v
		}
	}
	return ev
}

func actorType(k authn.Kind) auditv1.ActorType {
	switch k {
	case authn.KindUser:
		return auditv1.ActorType_ACTOR_TYPE_USER
	case authn.KindService:
		return auditv1.ActorType_ACTOR_TYPE_SERVICE
	}
	return auditv1.ActorType_ACTOR_TYPE_ANONYMOUS
}

// newKey is a random idempotency key: unique across services and replicas
// without coordination.
func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
