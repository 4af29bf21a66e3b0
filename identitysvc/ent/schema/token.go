package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// OneTimeToken is an email-verification or password-reset token. Only its
// SHA-256 hash is stored: a database leak reveals no usable token.
type OneTimeToken struct {
	ent.Schema
}

// Fields of OneTimeToken.
func (OneTimeToken) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("user_id", uuid.UUID{}).Immutable(),
		field.Enum("purpose").Values("verify_email", "reset_password").Immutable(),
		field.Bytes("token_hash").Unique().Immutable().Sensitive(),
		field.Time("expires_at").Immutable(),
		field.Time("used_at").Optional().Nillable(),
		field.Time("created_at").Default(time.Now).Immutable(),
	}
}

// Indexes of OneTimeToken.
func (OneTimeToken) Indexes() []ent.Index {
	return []ent.Index{index.Fields("user_id", "purpose")}
}
