package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
)

// TOTPCredential is a user's TOTP secret (RFC 6238): pending until
// confirmed with a code, then required at every login.
type TOTPCredential struct {
	ent.Schema
}

// Fields of TOTPCredential.
func (TOTPCredential) Fields() []ent.Field {
	return []ent.Field{
		// The user ID.
		field.String("id").NotEmpty().Immutable(),
		// The secret sealed with the KEK (AES-GCM, the user ID as
		// associated data).
		field.Bytes("secret_sealed").NotEmpty().Sensitive(),
		field.Time("created_at"),
		// Set once ConfirmTOTP proved the app has the secret: TOTP is on.
		field.Time("confirmed_at").Optional().Nillable(),
		// The last time step whose code was accepted; a code of that step or
		// an earlier one is refused, so a seen code cannot be replayed.
		field.Int64("last_used_step").Default(0),
		// Wrong codes counted since failure_window_start; when they reach
		// the configured threshold, TOTP logins of the user are refused
		// until locked_until. One row per user, so every replica counts on
		// the same row.
		field.Int("failed_attempts").Default(0).NonNegative(),
		field.Time("failure_window_start").Optional().Nillable(),
		field.Time("locked_until").Optional().Nillable(),
	}
}
