// Package authn verifies the credentials a request carries and names the
// caller, a [Principal], in the request's context.
//
// Portcullis has two kinds of credential:
//
//   - Access tokens: JWTs the Auth service signs for users, with keys it
//     publishes as a JWK Set (RFC 7517) at /.well-known/jwks.json. A
//     [Verifier] checks them against that set, which it fetches over HTTP,
//     caches, and fetches again when a token names a key it does not know
//     (a rotation), at most once per refresh interval.
//   - Service tokens: short-lived JWTs one Portcullis service presents to
//     another on internal procedures. A [ServiceTokenSource] mints them and
//     a [ServiceVerifier] checks them, both with the platform service key
//     (see [ServiceConfig]).
//
// Both verifiers are [Authenticator]s. The RPC layer's access interceptor
// calls one per request and stores the principal with [NewContext];
// handlers read it with [FromContext]. Nothing here trusts a header alone.
//
// # Configuration
//
// A service keeps [Config] and [ServiceConfig] in two sections of its
// configuration, as kernel/service's Config does:
//
//	type Config struct {
//		Tokens      authn.Config        `koanf:"tokens"`
//		ServiceAuth authn.ServiceConfig `koanf:"service_auth"`
//	}
//
// and lists the keys in its config/default.yaml:
//
//	tokens:
//	  jwks_url: http://authsvc/.well-known/jwks.json
//	  issuer: portcullis       # the Auth service's iss
//	  audience: portcullis
//	  algorithms: [EdDSA, ES256]
//	  leeway: 30s
//	  refresh_interval: 1s     # least time between fetches for an unknown kid
//	  cache_ttl: 5m            # key set refreshed after this (or a shorter max-age)
//	  token_cache_size: 10000
//	  max_lifetime: 24h        # longest iat-to-exp accepted
//	service_auth:
//	  service_key: ""          # secret: set PORTCULLIS_SERVICE_AUTH_SERVICE_KEY
//	  service_previous_keys: []
//	  service_token_ttl: 60s
//	  service_leeway: 30s
//
// A service that makes or serves no internal calls, such as the gateway,
// leaves out [ServiceConfig], and so never holds the service key.
//
// # Algorithms
//
// Tokens are signed with EdDSA (Ed25519) or ES256 and verified with
// github.com/lestrrat-go/jwx/v2; no other algorithm is accepted. The algorithm a signature is checked with is the one of the
// key the token's `kid` names; the token's `alg` must merely agree with it
// and with [Config.Algorithms]. So `alg: none`, an HS256 token keyed with
// the public key, or an RS256 token are rejected whatever they contain.
//
// # Errors
//
// Verification errors wrap one of a small set of sentinel errors
// ([ErrTokenMissing], [ErrTokenMalformed], [ErrTokenInvalid],
// [ErrTokenExpired], [ErrTokenNotYetValid], [ErrKeyUnknown],
// [ErrKeysUnavailable]) with detail meant for the logs. Callers answer all
// of them with one fixed Unauthenticated error, the detail helps an
// operator and would help an attacker probe the checks, except
// [ErrKeysUnavailable], which says nothing of the token: it is Unavailable,
// to retry.
package authn
