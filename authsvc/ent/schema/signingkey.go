package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// SigningKey is a key that signs access tokens. The newest one active
// (activated and not retired) is the key every replica signs with; the
// next key is published ahead of its activation, and retired keys stay
// published until every token they signed has expired.
type SigningKey struct {
	ent.Schema
}

// Fields of SigningKey.
func (SigningKey) Fields() []ent.Field {
	return []ent.Field{
		// The key ID: the RFC 7638 thumbprint of the public key.
		field.String("id").NotEmpty().Immutable(),
		// EdDSA or ES256.
		field.String("alg").NotEmpty().Immutable(),
		// The public key as the JWK the JWKS publishes.
		field.Bytes("public_jwk").NotEmpty().Immutable(),
		// The PKCS #8 private key sealed with the KEK (AES-GCM, the kid as
		// associated data, so a row's ciphertext cannot be moved to another).
		field.Bytes("private_key_sealed").NotEmpty().Sensitive().Immutable(),
		field.Time("created_at").Immutable(),
		// When a newer key took over, or takes over; tokens it signed
		// expire at the latest one access-token lifetime later.
		field.Time("retired_at").Optional().Nillable(),
		// When the key begins to sign, for a key published ahead of its
		// use (a scheduled rotation); nil means from created_at.
		field.Time("activates_at").Optional().Nillable(),
	}
}

// Indexes of SigningKey.
func (SigningKey) Indexes() []ent.Index {
	return []ent.Index{index.Fields("retired_at")}
}
