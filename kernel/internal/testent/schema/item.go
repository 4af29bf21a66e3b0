// Package schema is the Ent schema of the database package's tests: one
// small table, enough to exercise migrations and pooled queries.
package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// Item is a named thing with a creation time.
type Item struct {
	ent.Schema
}

// Fields of Item.
func (Item) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty(),
		field.Time("created_at").Immutable(),
	}
}

// Indexes of Item.
func (Item) Indexes() []ent.Index {
	return []ent.Index{index.Fields("name").Unique()}
}
