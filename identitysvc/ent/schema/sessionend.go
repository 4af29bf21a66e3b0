package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// SessionEnd is a call to the Auth service's EndUserSessions not yet
// answered: written in the transaction of the change that calls for it (a
// user disabled or deleted, a password reset or changed), deleted once
// Auth has ended the sessions. So a crash, or an Auth service down for
// longer than a few tries, delays the end of a user's sessions rather
// than losing it.
type SessionEnd struct {
	ent.Schema
}

// Fields of SessionEnd.
func (SessionEnd) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("user_id", uuid.UUID{}).Immutable(),
		field.String("reason").NotEmpty().Immutable(),
		// The session the change was made in, kept ("" for none).
		field.String("except_session").Default("").Immutable(),
		field.Time("created_at").Immutable(),
		// Tries that failed so far.
		field.Int("attempts").Default(0).NonNegative(),
		// When the next try is due. Whoever tries first leases the row by
		// moving this past the try's end, so that one instance at a time
		// tries it, and another does once a crashed one's lease is over.
		field.Time("next_attempt_at"),
	}
}

// Indexes of SessionEnd.
func (SessionEnd) Indexes() []ent.Index {
	return []ent.Index{index.Fields("next_attempt_at")}
}
