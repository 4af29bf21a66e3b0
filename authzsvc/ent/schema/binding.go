package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// Binding gives a user a role, everywhere (empty resource) or on one
// resource such as `org:acme`.
type Binding struct {
	ent.Schema
}

// Fields of Binding.
func (Binding) Fields() []ent.Field {
	return []ent.Field{
		field.String("user_id").NotEmpty().MaxLen(255).Immutable(),
		field.UUID("role_id", uuid.UUID{}).Immutable(),
		// resource is empty for a binding that applies everywhere, so the
		// unique index below covers global bindings too (NULLs would not
		// collide).
		field.String("resource").MaxLen(255).Default("").Immutable(),
		field.Time("created_at").Default(time.Now).Immutable(),
	}
}

// Edges of Binding.
func (Binding) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("role", Role.Type).Ref("bindings").Field("role_id").Unique().Required().Immutable(),
	}
}

// Indexes of Binding.
func (Binding) Indexes() []ent.Index {
	return []ent.Index{
		// One binding per (user, role, resource); it also serves loading a
		// user's decision index, which filters on user_id.
		index.Fields("user_id", "role_id", "resource").Unique(),
		// Counting and cascading a role's bindings.
		index.Fields("role_id"),
	}
}
