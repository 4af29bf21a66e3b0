package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
)

// SessionCutoff is when EndUserSessions last ended a user's sessions. A
// login that began before then gets no session, though it checked the
// user's credentials before the change that ended them (see Login).
type SessionCutoff struct {
	ent.Schema
}

// Fields of SessionCutoff.
func (SessionCutoff) Fields() []ent.Field {
	return []ent.Field{
		// The user ID.
		field.String("id").NotEmpty().Immutable(),
		field.Time("ended_before"),
	}
}
