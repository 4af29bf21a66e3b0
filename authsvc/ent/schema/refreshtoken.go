package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// RefreshToken is one refresh token of a session, stored only as the
// SHA-256 of the token: a database leak yields nothing to present.
type RefreshToken struct {
	ent.Schema
}

// Fields of RefreshToken.
func (RefreshToken) Fields() []ent.Field {
	return []ent.Field{
		field.Bytes("hash").NotEmpty().Immutable(),
		field.String("session_id").NotEmpty().Immutable(),
		field.Time("created_at").Immutable(),
		// When it was exchanged by Refresh; presenting it again is reuse.
		field.Time("used_at").Optional().Nillable(),
	}
}

// Indexes of RefreshToken.
func (RefreshToken) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("hash").Unique(),
		index.Fields("session_id"),
	}
}
