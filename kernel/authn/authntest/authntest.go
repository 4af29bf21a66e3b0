// Package authntest gives tests a stand-in for the Auth service's signing
// side: a real HTTP server publishing a JWK Set, and a token minter whose
// tokens range from valid to every kind of forgery a verifier must refuse.
// It is test support, not a mock: a [authn.Verifier] under test fetches the
// keys over HTTP and checks real signatures.
//
//	srv := authntest.NewServer(t)
//	v := srv.NewVerifier()
//	p, err := v.Verify(ctx, srv.Issue(authntest.WithSubject("user-42")))
package authntest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/config"
)

// The values a [Server] puts in the tokens it issues and the [authn.Config]
// it returns, unless told otherwise.
const (
	Issuer    = "https://auth.portcullis.test"
	Audience  = "portcullis"
	Subject   = "user-1"
	SessionID = "session-1"
	// JWKSPath is where the server publishes its keys.
	JWKSPath = "/.well-known/jwks.json"
	// Lifetime is the lifetime of an issued token.
	Lifetime = 15 * time.Minute
)

// Server publishes a JWK Set over HTTP, as the Auth service does, and
// issues tokens signed with its keys. It starts with one EdDSA key, the
// current one. It is safe for concurrent use, but a misuse such as an
// unknown kid fails the test with t.Fatal, which only works on the test's
// goroutine. The zero value is not usable; call [NewServer].
type Server struct {
	t   testing.TB
	srv *httptest.Server
	now func() time.Time

	mu           sync.Mutex
	keys         []*signingKey          // published, in order
	all          map[string]*signingKey // ever generated, by kid
	current      *signingKey            // signs unless a token option says otherwise
	failing      bool
	cacheControl string
	next         int // number of the next key

	fetches atomic.Int64
}

type signingKey struct {
	kid    string
	alg    string
	signer crypto.Signer // ed25519.PrivateKey or *ecdsa.PrivateKey
}

// ServerOption configures a [Server].
type ServerOption func(*Server)

// WithClock sets the clock the server dates tokens with; pass the same to
// the verifier with [authn.WithClock]. Nil, or no option, means [time.Now].
func WithClock(now func() time.Time) ServerOption {
	return func(s *Server) {
		if now != nil {
			s.now = now
		}
	}
}

// NewServer starts a server, closed when the test ends. Outside a test,
// such as in an Example, t may be nil: then the caller closes the server
// with [Server.Close], and a failure panics.
func NewServer(t testing.TB, opts ...ServerOption) *Server {
	s := &Server{t: t, now: time.Now, all: map[string]*signingKey{}}
	for _, opt := range opts {
		opt(s)
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveJWKS))
	if t != nil {
		t.Cleanup(s.srv.Close)
	}
	s.Rotate()
	return s
}

// Close shuts the server down. A server started with a test closes itself
// when the test ends.
func (s *Server) Close() { s.srv.Close() }

// fatalf fails the test, or panics outside one.
func (s *Server) fatalf(format string, args ...any) {
	if s.t == nil {
		panic(fmt.Sprintf(format, args...))
	}
	s.t.Helper()
	s.t.Fatalf(format, args...)
}

// URL returns the URL of the JWK Set.
func (s *Server) URL() string { return s.srv.URL + JWKSPath }

// Client returns an HTTP client for the server.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Config returns the configuration of a verifier of the server's tokens;
// the other fields are zero, which means their defaults.
func (s *Server) Config() authn.Config {
	return authn.Config{JWKSURL: s.URL(), Issuer: Issuer, Audience: Audience}
}

// NewVerifier returns a verifier of the server's tokens, using the server's
// clock and HTTP client; opts come after, and may override them.
func (s *Server) NewVerifier(opts ...authn.Option) *authn.Verifier {
	v, err := authn.NewVerifier(s.Config(), append([]authn.Option{authn.WithHTTPClient(s.Client()), authn.WithClock(s.now)}, opts...)...)
	if err != nil {
		s.fatalf("authntest: %v", err)
	}
	return v
}

// AddKey generates a key for alg ([authn.AlgEdDSA] or [authn.AlgES256])
// and publishes it without signing with it, and returns its kid.
func (s *Server) AddKey(alg string) string {
	var signer crypto.Signer
	var err error
	switch alg {
	case authn.AlgEdDSA:
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	case authn.AlgES256:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		s.fatalf("authntest: AddKey: unsupported alg %q", alg)
	}
	if err != nil {
		s.fatalf("authntest: AddKey: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	k := &signingKey{kid: "key-" + strconv.Itoa(s.next), alg: alg, signer: signer}
	s.keys = append(s.keys, k)
	s.all[k.kid] = k
	return k.kid
}

// Rotate publishes a new EdDSA key, makes it the current one, and returns
// its kid. The old keys stay published.
func (s *Server) Rotate() string {
	kid := s.AddKey(authn.AlgEdDSA)
	s.UseKey(kid)
	return kid
}

// UseKey makes the published key kid the current one.
func (s *Server) UseKey(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current = s.keyLocked(kid)
}

// RemoveKey withdraws the key kid from the JWK Set. Tokens can still be
// signed with it, with [WithKey].
func (s *Server) RemoveKey(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keyLocked(kid)
	s.keys = slices.DeleteFunc(s.keys, func(o *signingKey) bool { return o == k })
}

// KeyID returns the kid of the current key.
func (s *Server) KeyID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current.kid
}

// PublicKey returns the public key of kid: an ed25519.PublicKey or an
// *ecdsa.PublicKey.
func (s *Server) PublicKey(kid string) crypto.PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keyLocked(kid).signer.Public()
}

// SetFailing makes the JWK Set answer 503 Service Unavailable, or serve
// again.
func (s *Server) SetFailing(failing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = failing
}

// SetCacheControl sets the Cache-Control header of the JWK Set; empty
// sends none.
func (s *Server) SetCacheControl(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cacheControl = v
}

// Fetches returns how many times the JWK Set was requested.
func (s *Server) Fetches() int { return int(s.fetches.Load()) }

// keyLocked returns the key kid, of all the keys ever generated; s.mu must
// be held.
func (s *Server) keyLocked(kid string) *signingKey {
	k := s.all[kid]
	if k == nil {
		s.fatalf("authntest: no key %q", kid)
	}
	return k
}

// signingKey returns the key kid, or the current one if kid is empty.
func (s *Server) signingKey(kid string) *signingKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	if kid == "" {
		return s.current
	}
	return s.keyLocked(kid)
}

func (s *Server) serveJWKS(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != JWKSPath {
		http.NotFound(w, r)
		return
	}
	s.fetches.Add(1)
	s.mu.Lock()
	failing, cacheControl := s.failing, s.cacheControl
	set := struct {
		Keys []map[string]string `json:"keys"`
	}{Keys: []map[string]string{}}
	for _, k := range s.keys {
		set.Keys = append(set.Keys, publicJWK(k))
	}
	s.mu.Unlock()
	if failing {
		http.Error(w, "authntest: failing on purpose", http.StatusServiceUnavailable)
		return
	}
	if cacheControl != "" {
		w.Header().Set("Cache-Control", cacheControl)
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_ = json.NewEncoder(w).Encode(set)
}

// publicJWK returns the public JWK of k (RFC 8037, RFC 7518 section 6.2).
func publicJWK(k *signingKey) map[string]string {
	enc := base64.RawURLEncoding.EncodeToString
	m := map[string]string{"kid": k.kid, "alg": k.alg, "use": "sig"}
	switch pub := k.signer.Public().(type) {
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", enc(pub)
	case *ecdsa.PublicKey:
		b, err := pub.Bytes() // 0x04 || X || Y
		if err != nil {
			panic(err)
		}
		m["kty"], m["crv"], m["x"], m["y"] = "EC", "P-256", enc(b[1:33]), enc(b[33:])
	}
	return m
}

// ServiceConfig returns a service token configuration with a fresh random
// key. Give the same one to the [authn.ServiceTokenSource] and the
// [authn.ServiceVerifier] that must agree.
func ServiceConfig() authn.ServiceConfig {
	seed := make([]byte, ed25519.SeedSize)
	_, _ = rand.Read(seed)
	return authn.ServiceConfig{ServiceKey: config.Secret(base64.StdEncoding.EncodeToString(seed))}
}

// Clock is a clock a test sets by hand. Pass its Now method to
// [WithClock] and [authn.WithClock]. It is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock showing t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d, backwards if d is negative.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// hmacSHA256 signs for HS256.
func hmacSHA256(secret, input []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(input)
	return m.Sum(nil)
}

// must panics on err; the errors it guards cannot happen with valid
// arguments.
func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("authntest: %v", err))
	}
	return v
}
