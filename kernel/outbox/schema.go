package outbox

import (
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// Table is the outbox table's name in every service's schema.
const Table = "outbox_events"

// Schema is the Ent schema of the outbox table. A service declares it in
// its ent/schema package so its migrations create the table:
//
//	// OutboxEvent is an audit event waiting for delivery (kernel/outbox).
//	type OutboxEvent struct{ outbox.Schema }
type Schema struct {
	ent.Schema
}

// Fields of the outbox table.
func (Schema) Fields() []ent.Field {
	return []ent.Field{
		// id orders delivery: a transaction's events go out in the order
		// it wrote them. Across transactions it is the order they took
		// their ids, not always the order they committed: events committed
		// after a later id's are delivered after those. Audit's chain
		// records the order it received them in.
		field.Int64("id").Immutable(),
		field.String("idempotency_key").NotEmpty().Unique().Immutable(),
		// payload is the protobuf encoding of an audit.v1.NewEvent.
		field.Bytes("payload").Immutable(),
		field.Time("created_at").Immutable(),
		// delivered_at is NULL while the event waits, the time it was
		// delivered, or the epoch when the Audit service refused it
		// ([RejectedMark]).
		field.Time("delivered_at").Optional().Nillable(),
	}
}

// Indexes of the outbox table.
func (Schema) Indexes() []ent.Index {
	return []ent.Index{
		// Finding the pending events and purging delivered ones.
		index.Fields("delivered_at", "id"),
	}
}

// Annotations of the outbox table.
func (Schema) Annotations() []schema.Annotation {
	return []schema.Annotation{entsql.Annotation{Table: Table}}
}
