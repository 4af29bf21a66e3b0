package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"github.com/google/uuid"
)

// Role is a named set of permissions.
type Role struct {
	ent.Schema
}

// Fields of Role.
func (Role) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("id", uuid.UUID{}).Default(uuid.New).Immutable(),
		// name is unique; the domain enforces its format.
		field.String("name").NotEmpty().MaxLen(63).Unique(),
		// In characters, as the contract and the domain count them; MaxLen
		// would count bytes.
		field.String("description").MaxRuneLen(500).Default(""),
		// built_in marks the roles the service creates itself (admin, user):
		// they cannot be changed or deleted.
		field.Bool("built_in").Default(false).Immutable(),
		field.Time("created_at").Default(time.Now).Immutable(),
		// updated_at moves with the role's permissions too.
		field.Time("updated_at").Default(time.Now),
	}
}

// Edges of Role.
func (Role) Edges() []ent.Edge {
	return []ent.Edge{
		// A role's grants go with it.
		edge.To("permissions", Permission.Type).Annotations(entsql.OnDelete(entsql.Cascade)),
		// Bindings are NOT cascaded by the database: deleting a bound role
		// needs the caller's explicit cascade, and the foreign key makes a
		// binding added concurrently with the delete fail the delete rather
		// than vanish.
		edge.To("bindings", Binding.Type).Annotations(entsql.OnDelete(entsql.NoAction)),
	}
}
