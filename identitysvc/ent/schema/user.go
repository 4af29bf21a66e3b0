// Package schema is the Identity service's Ent schema: users, their
// one-time tokens, and the audit outbox.
package schema

import (
	"time"

	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
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
		// display_name is bounded in characters, as the contract says
		// (identity.MaxDisplayNameRunes); MaxLen would count bytes.
		field.String("display_name").Default("").MaxRuneLen(200),
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

// Indexes of User: one for every filter ListUsers offers, all over live
// rows only (every listing has deleted_at IS NULL, so the planner can use
// them). Listing pages through users by (created_at, id), with or without
// a status filter, so both orders are indexed.
//
// The text filters need more than the default B-tree:
//   - an email prefix is LIKE 'prefix%' on the lower-case email; a
//     B-tree with the default operator class serves it only under the C
//     collation, varchar_pattern_ops under any;
//   - a display-name substring (and the query filter, a substring of email
//     or display name) is ILIKE '%text%', which no B-tree can serve but
//     pg_trgm's GIN operator class can.
//
// pg_trgm lives in schema public, created there by the migration or, for a
// service whose role may not create extensions, beforehand by the
// platform's administrator. The service's search_path holds only its own
// schema, so the operator class is named with its schema.
func (User) Indexes() []ent.Index {
	live := entsql.IndexWhere("deleted_at IS NULL")
	trigram := []schema.Annotation{live, entsql.IndexType("GIN"), entsql.OpClass("public.gin_trgm_ops")}
	return []ent.Index{
		index.Fields("email").Unique().Annotations(live),
		index.Fields("created_at", "id").Annotations(live),
		index.Fields("status", "created_at", "id").Annotations(live),
		index.Fields("email").StorageKey("user_email_prefix").Annotations(live, entsql.OpClass("varchar_pattern_ops")),
		index.Fields("email").StorageKey("user_email_trgm").Annotations(trigram...),
		index.Fields("display_name").StorageKey("user_display_name_trgm").Annotations(trigram...),
	}
}
