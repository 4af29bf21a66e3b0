package authn

import (
	"context"
	"strconv"
	"time"
)

// Kind says what a [Principal] is: a user holding an access token or a
// service holding a service token. The zero Kind names nothing; a verifier
// never returns it.
type Kind uint8

// The kinds of principal.
const (
	// KindUser is a user authenticated by an access token from the Auth
	// service.
	KindUser Kind = iota + 1
	// KindService is a Portcullis service authenticated by a service token.
	KindService
)

// String returns "user" or "service", the words the logs use.
func (k Kind) String() string {
	switch k {
	case KindUser:
		return "user"
	case KindService:
		return "service"
	case 0:
		return "none"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Principal is the authenticated caller of a request, as a verified token
// names it. The kernel gives it no business meaning: Subject is a user ID or
// a service name, and what either may do is the Authz service's business.
//
// A Principal returned by a verifier may share its Audience slice with other
// requests that presented the same token; treat it as read-only.
type Principal struct {
	// Kind says whether Subject is a user or a service.
	Kind Kind
	// Subject is the user ID (the token's `sub`) for [KindUser], or the
	// calling service's name for [KindService]. Never empty.
	Subject string
	// SessionID is the Auth service session the access token belongs to
	// (the `sid` claim). Empty for services and for tokens without one.
	SessionID string
	// TokenID is the token's `jti` claim; empty if it has none.
	TokenID string
	// Audience is the token's `aud` claim, which contains the audience the
	// verifier requires.
	Audience []string
	// ExpiresAt is when the token expires (`exp`).
	ExpiresAt time.Time
	// IssuedAt is when the token was issued (`iat`); zero if it does not
	// say.
	IssuedAt time.Time
}

// principalKey is the context key of the [Principal]. Being an unexported
// type, no other package can set or read it except through [NewContext] and
// [FromContext].
type principalKey struct{}

// NewContext returns a copy of ctx carrying p. The RPC layer's access
// interceptor calls it once a token is verified; nothing else should, since
// handlers trust what [FromContext] returns.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal [NewContext] stored in ctx, and whether
// there was one. It reports false for a request that carried no credential,
// such as a public procedure called anonymously.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
