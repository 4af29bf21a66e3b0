package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// Permission is one permission granted to one role: a string
// `<service>.<resource>.<action>`, possibly ending in a wildcard segment, or
// `*` alone.
type Permission struct {
	ent.Schema
}

// Fields of Permission.
func (Permission) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("role_id", uuid.UUID{}).Immutable(),
		field.String("name").NotEmpty().MaxLen(200).Immutable(),
		field.Time("created_at").Default(time.Now).Immutable(),
	}
}

// Edges of Permission.
func (Permission) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("role", Role.Type).Ref("permissions").Field("role_id").Unique().Required().Immutable(),
	}
}

// Indexes of Permission.
func (Permission) Indexes() []ent.Index {
	return []ent.Index{
		// Each permission at most once per role; granting twice is a no-op.
		index.Fields("role_id", "name").Unique(),
	}
}
