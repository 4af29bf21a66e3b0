// Package schema is the Identity service's Ent schema: users, their
// one-time tokens, and the audit outbox.
package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"github.com/google/uuid"
)

// User is an account.
//
// Deleting a user keeps a tombstone: the row's id, created_at and deleted_at
// stay, so the ID other services recorded (audit events, sessions) still
// resolves to "a deleted user" and is never handed out again, while
// everything personal (email, display name, password hash, verification,
// lockout state) is erased and the user's one-time tokens are deleted in the
// same transaction. The email index only covers live users, so the address
// is free for a new account at once.
type User struct {
	ent.Schema
}

// Fields of User.
func (User) Fields() []ent.Field {
	return []ent.Field{
		field.UUID("id", uuid.UUID{}).Default(uuid.New).Immutable(),
		// email is stored normalised (trimmed, lower-case), so uniqueness
		// is case-insensitive; "" only on a deleted user's tombstone.
		field.String("email").MaxLen(254),
		field.String("display_name").Default("").MaxLen(200),
		// password_hash is an argon2id PHC string; "" on a tombstone.
		field.String("password_hash").Sensitive(),
		field.Enum("status").Values("active", "disabled").Default("active"),
		field.Time("email_verified_at").Optional().Nillable(),
		// Lockout: failures counted since failure_window_start; the account
		// is locked until locked_until once they reach the threshold.
		field.Int("failed_attempts").Default(0).NonNegative(),
		field.Time("failure_window_start").Optional().Nillable(),
		field.Time("locked_until").Optional().Nillable(),
		field.Time("created_at").Default(time.Now).Immutable(),
		field.Time("updated_at").Default(time.Now).UpdateDefault(time.Now),
		field.Time("deleted_at").Optional().Nillable(),
	}
}

// Indexes of User. Listing pages through live users by (created_at, id),
// with or without a status filter, so both orders are indexed over live
// rows only. The query filter is a case-insensitive substring match on
// email or display name, which no B-tree can serve: it needs a pg_trgm GIN
// index, and the service's role may not create extensions (see
// ListUsers).
func (User) Indexes() []ent.Index {
	live := entsql.IndexWhere("deleted_at IS NULL")
	return []ent.Index{
		index.Fields("email").Unique().Annotations(live),
		index.Fields("created_at", "id").Annotations(live),
		index.Fields("status", "created_at", "id").Annotations(live),
	}
}
