package authn

import "context"

// Authenticator turns a bearer credential into the [Principal] it proves.
// [Verifier] and [ServiceVerifier] are Authenticators; the RPC layer's
// access interceptor holds one of each. A peer-certificate check could be
// one too, when mTLS replaces service tokens.
type Authenticator interface {
	// Authenticate returns the principal token proves, or an error that
	// wraps one of the package's sentinel errors.
	Authenticate(ctx context.Context, token string) (Principal, error)
}

var (
	_ Authenticator = (*Verifier)(nil)
	_ Authenticator = (*ServiceVerifier)(nil)
)
