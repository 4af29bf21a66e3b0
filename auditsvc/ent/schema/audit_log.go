// Package schema is the Audit service's Ent schema: the append-only,
// hash-chained audit log. See ../../CHAIN.md for how a row's hash is made.
package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// AuditLog is one recorded audit event. Rows are only ever inserted: a
// trigger (migration 2, hand-written) refuses UPDATE, DELETE and TRUNCATE,
// and every field is Immutable so the generated client has no way to
// change one either.
type AuditLog struct {
	ent.Schema
}

// Annotations of AuditLog.
func (AuditLog) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entsql.Table("audit_log"),
		// Positive() checks only what the generated client inserts. A row
		// at sequence zero or below, written with the service's own
		// credentials, would be served by queries yet never verified, as
		// chains start at 1.
		entsql.Checks(map[string]string{"audit_log_sequence_positive": "sequence > 0"}),
	}
}

// Fields of AuditLog.
func (AuditLog) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("id", uuid.UUID{}).Immutable(),
		// sequence is allocated under the chain's advisory lock, never from
		// a PostgreSQL sequence: those leave gaps when a transaction rolls
		// back, and the contract promises none.
		field.Int64("sequence").Immutable().Positive(),
		field.Time("time").Immutable(),
		field.Time("record_time").Immutable(),
		// actor_type and outcome hold the numbers of the contract's enums.
		field.Int16("actor_type").Immutable(),
		field.String("actor_id").Immutable(),
		field.String("action").Immutable(),
		field.String("target").Immutable(),
		field.Int16("outcome").Immutable(),
		field.String("source_ip").Immutable(),
		field.String("user_agent").Immutable(),
		field.String("request_id").Immutable(),
		field.JSON("metadata", map[string]string{}).Immutable().
			SchemaType(map[string]string{dialect.Postgres: "jsonb"}),
		field.String("idempotency_key").Immutable(),
		field.Bytes("previous_hash").Immutable(),
		field.Bytes("hash").Immutable(),
	}
}

// Indexes of AuditLog: one per filter of QueryEvents, each ending in
// sequence so a filtered page is an index range scan in sequence order.
func (AuditLog) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("sequence").Unique(),
		index.Fields("idempotency_key").Unique(),
		index.Fields("actor_id", "sequence"),
		index.Fields("target", "sequence"),
		index.Fields("request_id", "sequence"),
		index.Fields("time"),
		// text_pattern_ops lets `action LIKE 'prefix%'` use the index
		// whatever the database's collation.
		index.Fields("action").Annotations(entsql.OpClass("text_pattern_ops")),
	}
}
