package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// Session is one login: the family of refresh tokens descending from it.
// Revoking it ends every token of the family.
type Session struct {
	ent.Schema
}

// Fields of Session.
func (Session) Fields() []ent.Field {
	return []ent.Field{
		field.String("id").NotEmpty().Immutable(),
		field.String("user_id").NotEmpty().Immutable(),
		field.Time("created_at").Immutable(),
		field.Time("last_refresh_at").Optional().Nillable(),
		// The idle limit: the latest refresh token is refused after it.
		field.Time("idle_expires_at"),
		// The absolute limit, set at login.
		field.Time("expires_at").Immutable(),
		field.Time("revoked_at").Optional().Nillable(),
		// Why it was revoked: logout, revoked, reuse_detected, or the reason
		// another service gave EndUserSessions (user_disabled, ...).
		field.String("revoke_reason").Optional(),
		field.String("source_ip").Default("").Immutable(),
		field.String("user_agent").Default("").Immutable(),
	}
}

// Indexes of Session.
func (Session) Indexes() []ent.Index {
	return []ent.Index{index.Fields("user_id", "created_at")}
}
