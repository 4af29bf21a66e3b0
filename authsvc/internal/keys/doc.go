// Package keys holds the Auth service's signing keys: it generates them,
// keeps their private halves sealed at rest under the key-encryption key,
// picks the one active key every replica signs with, rotates it, publishes
// the public halves as a JWK Set (RFC 7517), and signs access tokens as
// compact JWS (RFC 7515) with EdDSA (RFC 8037) or ES256 (RFC 7518), using
// github.com/lestrrat-go/jwx/v2.
//
// The protected header is fixed per key and the claims are one small
// struct, so a token costs little more than its signature
// (BenchmarkSign reports the ratio).
package keys
