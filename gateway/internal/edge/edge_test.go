package edge_test

import (
	"context"
	"crypto/ed25519"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/authn/authntest"
	"portcullis.dev/kernel/rpc"
	"portcullis.dev/proto/access"
	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"
	"portcullis.dev/proto/auth/v1/authv1connect"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
	optionsv1 "portcullis.dev/proto/options/v1"
)

// TestEdge runs the gateway against one Consul with an Identity and an
// Audit instance; each subtest starts the gateways it needs.
func TestEdge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startIdentity(t, "id-1")
	audit := &auditServer{release: make(chan struct{}), events: 3}
	e.startAudit(t, audit)
	gw := e.startGateway(t, e.config(t))
	token := e.auth.Issue(authntest.WithSubject("user-42"))

	// The instances turn healthy within a check interval or so.
	ident := identityv1connect.NewIdentityServiceClient(http.DefaultClient, gw.url)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := ident.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@b.c"}))
		assert.NoError(c, err)
	}, 15*time.Second, 50*time.Millisecond)
	// The stand-in Audit service implements only ExportEvents: GetEvent
	// answering Unimplemented, not Unavailable, means the gateway reaches
	// it, without starting the stream the streaming subtest watches.
	audits := auditv1connect.NewAuditServiceClient(http.DefaultClient, gw.url)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := audits.GetEvent(t.Context(), withToken(connect.NewRequest(&auditv1.GetEventRequest{}), token))
		assert.Equal(c, connect.CodeUnimplemented, connect.CodeOf(err))
	}, 15*time.Second, 50*time.Millisecond)

	t.Run("protocols", func(t *testing.T) {
		t.Parallel()
		for _, p := range protocols() {
			t.Run(p.name, func(t *testing.T) {
				c := identityv1connect.NewIdentityServiceClient(p.client, gw.url, p.opts...)
				res, err := c.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@b.c", DisplayName: strings.Repeat("x", 1000)}))
				require.NoError(t, err)
				assert.Equal(t, "a@b.c", res.Msg.GetUser().GetEmail())
				assert.Equal(t, "from-id-1", res.Trailer().Get("X-Test-Trailer"), "trailers pass")

				req := connect.NewRequest(&identityv1.GetMeRequest{})
				bearerHeader(token)(req.Header())
				me, err := c.GetMe(t.Context(), req)
				require.NoError(t, err)
				assert.Equal(t, "user-42", me.Msg.GetUser().GetId(), "the token reaches the service")

				_, err = c.GetMe(t.Context(), connect.NewRequest(&identityv1.GetMeRequest{}))
				assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))

				// An error status of the service, carried in gRPC trailers.
				_, err = c.GetUser(t.Context(), withToken(connect.NewRequest(&identityv1.GetUserRequest{UserId: "x"}), token))
				assert.Equal(t, connect.CodeNotFound, connect.CodeOf(err))

				// Internal procedures do not exist from outside.
				_, err = c.VerifyCredentials(t.Context(), connect.NewRequest(&identityv1.VerifyCredentialsRequest{}))
				assert.Equal(t, connect.CodeUnimplemented, connect.CodeOf(err))

				a := auditv1connect.NewAuditServiceClient(p.client, gw.url, p.opts...)
				_, err = a.Record(t.Context(), connect.NewRequest(&auditv1.RecordRequest{}))
				assert.Equal(t, connect.CodeUnimplemented, connect.CodeOf(err))
			})
		}
	})

	t.Run("internal and unknown procedures are 404", func(t *testing.T) {
		t.Parallel()
		paths := []string{
			"/portcullis.identity.v1.IdentityService/Nope",
			"/grpc.health.v1.Health/Check",
			"/nope",
		}
		// Every internal procedure of every contract, so that one added
		// later is covered without anyone remembering to list it here.
		for _, p := range access.All() {
			if p.Rule.Level == optionsv1.Access_ACCESS_INTERNAL {
				paths = append(paths, p.Name)
			}
		}
		require.Contains(t, paths, identityv1connect.IdentityServiceVerifyCredentialsProcedure)
		require.Contains(t, paths, authv1connect.AuthServiceEndUserSessionsProcedure)
		for _, client := range bothPaths() {
			for _, path := range paths {
				resp, err := client.c.Post(gw.url+path, "application/json", strings.NewReader("{}"))
				require.NoError(t, err)
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				assert.Equal(t, http.StatusNotFound, resp.StatusCode, client.name, path)
				assert.Contains(t, string(body), `"code":"unimplemented"`, client.name, path)
			}
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		t.Parallel()
		p := protocols()[2] // gRPC over h2c
		c := auditv1connect.NewAuditServiceClient(p.client, gw.url, p.opts...)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		stream, err := c.ExportEvents(ctx, withToken(connect.NewRequest(&auditv1.ExportEventsRequest{}), token))
		require.NoError(t, err)
		require.True(t, stream.Receive(), "the first event arrives while the stream is open: %v", stream.Err())
		assert.Equal(t, int64(1), stream.Msg().GetEvent().GetSequence())
		close(audit.release)
		var seqs []int64
		for stream.Receive() {
			seqs = append(seqs, stream.Msg().GetEvent().GetSequence())
		}
		require.NoError(t, stream.Err())
		assert.Equal(t, []int64{2, 3}, seqs)
		require.NoError(t, stream.Close())

		// And over Connect on HTTP/1.1, now that the server does not wait.
		c = auditv1connect.NewAuditServiceClient(http.DefaultClient, gw.url)
		stream, err = c.ExportEvents(ctx, withToken(connect.NewRequest(&auditv1.ExportEventsRequest{}), token))
		require.NoError(t, err)
		n := 0
		for stream.Receive() {
			n++
		}
		require.NoError(t, stream.Err())
		assert.Equal(t, 3, n)

		_, err = c.ExportEvents(ctx, connect.NewRequest(&auditv1.ExportEventsRequest{}))
		if err == nil {
			s, _ := c.ExportEvents(ctx, connect.NewRequest(&auditv1.ExportEventsRequest{}))
			s.Receive()
			err = s.Err()
		}
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))

		// And over gRPC-Web on HTTP/1.1, whose status travels in a trailers
		// frame at the end of the body: a clean end proves it passed.
		p = protocols()[3]
		c = auditv1connect.NewAuditServiceClient(p.client, gw.url, p.opts...)
		stream, err = c.ExportEvents(ctx, withToken(connect.NewRequest(&auditv1.ExportEventsRequest{}), token))
		require.NoError(t, err)
		seqs = nil
		for stream.Receive() {
			seqs = append(seqs, stream.Msg().GetEvent().GetSequence())
		}
		require.NoError(t, stream.Err())
		assert.Equal(t, []int64{1, 2, 3}, seqs)
		require.NoError(t, stream.Close())
	})

	t.Run("headers", func(t *testing.T) {
		t.Parallel()
		const trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		for _, tc := range []struct {
			name                string
			in                  map[string]string
			wantRequestID       string // empty: a new one
			wantTraceID         string // empty: a new one
			wantTracestateEmpty bool
		}{
			{name: "a client's request ID replaced, its trace kept",
				in:          map[string]string{"X-Request-Id": "req-123", "Traceparent": trace, "Tracestate": "a=b"},
				wantTraceID: "4bf92f3577b34da6a3ce929d0e0e4736"},
			{name: "forged values replaced",
				in: map[string]string{
					"X-Request-Id": "evil\"id", "Traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
					"Tracestate": "a=b", rpc.ServiceTokenHeader: "forged", "X-Forwarded-For": "1.2.3.4", "X-Real-Ip": "1.2.3.4",
				},
				wantTracestateEmpty: true},
		} {
			for _, client := range bothPaths() {
				t.Run(tc.name+"/"+client.name, func(t *testing.T) {
					c := identityv1connect.NewIdentityServiceClient(client.c, gw.url)
					req := connect.NewRequest(&identityv1.CreateUserRequest{})
					for k, v := range tc.in {
						req.Header().Set(k, v)
					}
					res, err := c.CreateUser(t.Context(), req)
					require.NoError(t, err)
					seen := func(h string) string { return res.Header().Get("X-Seen-" + h) }
					assert.Empty(t, seen(rpc.ServiceTokenHeader), "service token stripped")
					assert.Equal(t, "127.0.0.1", seen(rpc.ClientIPHeader), "the client, as the gateway decided, not as it said")
					assert.Equal(t, "127.0.0.1", seen("X-Forwarded-For"), "the client's XFF is not believed")
					id := seen(rpc.RequestIDHeader)
					assert.Equal(t, []string{id}, res.Header().Values(rpc.RequestIDHeader), "the client gets the ID back, once")
					if tc.wantRequestID != "" {
						assert.Equal(t, tc.wantRequestID, id)
					} else {
						assert.Len(t, id, 32)
					}
					tp := seen("Traceparent")
					require.Len(t, tp, 55)
					if tc.wantTraceID != "" {
						assert.Equal(t, tc.wantTraceID, tp[3:35])
						assert.NotEqual(t, trace, tp, "the gateway is the new parent")
						assert.Equal(t, "a=b", seen("Tracestate"))
					} else {
						assert.NotEqual(t, strings.Repeat("0", 32), tp[3:35])
					}
					if tc.wantTracestateEmpty {
						assert.Empty(t, seen("Tracestate"))
					}
				})
			}
		}
	})

	t.Run("JWT attacks refused at the edge", func(t *testing.T) {
		t.Parallel()
		a := e.auth
		pub := a.PublicKey(a.KeyID()).(ed25519.PublicKey)
		parts := strings.Split(a.Issue(), ".")
		tampered := parts[0] + "." + strings.Split(a.Issue(authntest.WithSubject("admin")), ".")[1] + "." + parts[2]
		now := time.Now()
		attacks := map[string]string{
			"alg none":           a.Issue(authntest.WithAlgNone()),
			"HS256 with pub key": a.Issue(authntest.WithHS256(pub)),
			"unknown kid":        a.Issue(authntest.WithHeader("kid", "no-such-key")),
			"expired":            a.Issue(authntest.WithIssuedAt(now.Add(-2*time.Hour)), authntest.WithExpiry(now.Add(-time.Hour))),
			"not yet valid":      a.Issue(authntest.WithNotBefore(now.Add(time.Hour))),
			"wrong iss":          a.Issue(authntest.WithIssuer("https://evil.example")),
			"wrong aud":          a.Issue(authntest.WithAudience("someone-else")),
			"tampered payload":   tampered,
			"garbage":            "not.a.jwt",
			"empty":              "",
		}
		inst := e.identity
		for _, client := range bothPaths() {
			c := identityv1connect.NewIdentityServiceClient(client.c, gw.url)
			// The control: a valid token does reach the service, where the
			// instance records it, so "not recorded" below means refused.
			valid := a.Issue(authntest.WithSubject("control-" + client.name))
			_, err := c.GetMe(t.Context(), withToken(connect.NewRequest(&identityv1.GetMeRequest{}), valid))
			require.NoError(t, err)
			_, reached := inst.bearers.Load("Bearer " + valid)
			require.True(t, reached, "a valid token never reached the service over %s", client.name)
			for name, tok := range attacks {
				t.Run(name+"/"+client.name, func(t *testing.T) {
					_, err := c.GetMe(t.Context(), withToken(connect.NewRequest(&identityv1.GetMeRequest{}), tok))
					assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
					_, reached := inst.bearers.Load("Bearer " + tok)
					assert.False(t, reached, "refused before reaching the service")
				})
			}
		}
	})

	t.Run("JWKS routed to the Auth service", func(t *testing.T) {
		t.Parallel()
		resp, err := http.Get(gw.url + "/.well-known/jwks.json")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Contains(t, string(body), e.auth.KeyID())
	})

	t.Run("body cap", func(t *testing.T) {
		t.Parallel()
		cfg := e.config(t)
		cfg.Limits.MaxBodyBytes = 512
		small := e.startGateway(t, cfg)
		for _, p := range protocols() {
			c := identityv1connect.NewIdentityServiceClient(p.client, small.url, p.opts...)
			_, err := c.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{DisplayName: strings.Repeat("x", 2048)}))
			assert.Equal(t, connect.CodeResourceExhausted, connect.CodeOf(err), p.name)
			_, err = c.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{DisplayName: "ok"}))
			assert.NoError(t, err, p.name)
		}
	})

	t.Run("CORS", func(t *testing.T) {
		t.Parallel()
		cfg := e.config(t)
		cfg.CORS.AllowedOrigins = []string{"http://localhost:*"}
		cg := e.startGateway(t, cfg)
		path := cg.url + identityv1connect.IdentityServiceCreateUserProcedure
		for _, tc := range []struct {
			origin string
			allow  bool
		}{{"http://localhost:5173", true}, {"https://evil.example", false}} {
			for _, client := range bothPaths() {
				pre, err := http.NewRequest(http.MethodOptions, path, nil)
				require.NoError(t, err)
				pre.Header.Set("Origin", tc.origin)
				pre.Header.Set("Access-Control-Request-Method", "POST")
				// Browsers send the list lowercase and sorted (Fetch standard); rs/cors relies on it.
				pre.Header.Set("Access-Control-Request-Headers", "authorization,connect-protocol-version,content-type")
				resp, err := client.c.Do(pre)
				require.NoError(t, err)
				_ = resp.Body.Close()
				post, err := http.NewRequest(http.MethodPost, path, strings.NewReader("{}"))
				require.NoError(t, err)
				post.Header.Set("Origin", tc.origin)
				post.Header.Set("Content-Type", "application/json")
				actual, err := client.c.Do(post)
				require.NoError(t, err)
				_ = actual.Body.Close()
				assert.Equal(t, http.StatusOK, actual.StatusCode)
				if tc.allow {
					assert.Less(t, resp.StatusCode, 300)
					assert.Equal(t, tc.origin, resp.Header.Get("Access-Control-Allow-Origin"))
					assert.Contains(t, strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")), "connect-protocol-version")
					assert.Equal(t, tc.origin, actual.Header.Get("Access-Control-Allow-Origin"))
					assert.Contains(t, actual.Header.Get("Access-Control-Expose-Headers"), "Grpc-Status")
				} else {
					for k := range resp.Header {
						assert.False(t, strings.HasPrefix(k, "Access-Control-Allow"), "preflight from %s: %s", tc.origin, k)
					}
					for k := range actual.Header {
						assert.False(t, strings.HasPrefix(k, "Access-Control-Allow"), "request from %s: %s", tc.origin, k)
					}
				}
			}
		}
	})

	t.Run("rate limits", func(t *testing.T) { testRateLimits(t, e) })
}

func withToken[T any](req *connect.Request[T], token string) *connect.Request[T] {
	req.Header().Set("Authorization", "Bearer "+token)
	return req
}

// TestRoutingFollowsHealth: an instance that turns critical in Consul stops
// receiving calls, and receives them again when it turns healthy.
func TestRoutingFollowsHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gw := e.startGateway(t, e.config(t))
	// Each check asks over both data paths; the first error counts.
	call := func() error {
		for _, client := range bothPaths() {
			c := identityv1connect.NewIdentityServiceClient(client.c, gw.url)
			if _, err := c.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{})); err != nil {
				return err
			}
		}
		return nil
	}
	assert.Equal(t, connect.CodeUnavailable, connect.CodeOf(call()), "no instance yet")

	inst := e.startIdentity(t, "id-1")
	start := time.Now()
	require.EventuallyWithT(t, func(c *assert.CollectT) { assert.NoError(c, call()) }, 15*time.Second, 20*time.Millisecond)
	t.Logf("routed %v after the instance started", time.Since(start))

	inst.ready.Store(false)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, connect.CodeUnavailable, connect.CodeOf(call()))
	}, 15*time.Second, 20*time.Millisecond)

	inst.ready.Store(true)
	require.EventuallyWithT(t, func(c *assert.CollectT) { assert.NoError(c, call()) }, 15*time.Second, 20*time.Millisecond)
}

// TestSurvivesInstanceKill: with two instances, killing one abruptly loses
// no call: a connection refused is retried on the other.
func TestSurvivesInstanceKill(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.startIdentity(t, "id-a")
	e.startIdentity(t, "id-b")
	gw := e.startGateway(t, e.config(t))
	c := identityv1connect.NewIdentityServiceClient(h2cClient(), gw.url)
	seen := map[string]bool{}
	require.EventuallyWithT(t, func(col *assert.CollectT) {
		res, err := c.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{}))
		if assert.NoError(col, err) {
			seen[res.Msg.GetUser().GetId()] = true
		}
		assert.Len(col, seen, 2, "both instances serve")
	}, 15*time.Second, 10*time.Millisecond)

	a.ln.kill()
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
		served sync.Map
	)
	for range 4 {
		wg.Go(func() {
			for range 25 {
				res, err := c.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{}))
				if err != nil {
					failed.Add(1)
					t.Log(err)
					continue
				}
				served.Store(res.Msg.GetUser().GetId(), true)
			}
		})
	}
	wg.Wait()
	assert.Zero(t, failed.Load(), "calls lost after one instance died")
	_, fromDead := served.Load("id-a")
	assert.False(t, fromDead)
}

// TestCutShortStreamsAreLogged: a stream the client leaves after its
// first message still gets its access log line, on both data paths.
func TestCutShortStreamsAreLogged(t *testing.T) {
	e := newEnv(t)
	e.startAudit(t, &auditServer{release: make(chan struct{}), events: 3})
	gw := e.startGateway(t, e.config(t))
	for _, client := range bothPaths() {
		t.Run(client.name, func(t *testing.T) {
			c := auditv1connect.NewAuditServiceClient(client.c, gw.url)
			for attempt := 0; ; attempt++ {
				ctx, cancel := context.WithCancel(t.Context())
				req := withToken(connect.NewRequest(&auditv1.ExportEventsRequest{}), e.auth.Issue())
				stream, err := c.ExportEvents(ctx, req)
				if err != nil || !stream.Receive() {
					cancel()
					require.Less(t, attempt, 300, "the first event never came through")
					time.Sleep(50 * time.Millisecond)
					continue
				}
				// The stream's own request ID finds its line among those of
				// attempts made before the instance was routed.
				id := stream.ResponseHeader().Get(rpc.RequestIDHeader)
				require.NotEmpty(t, id)
				cancel()
				_ = stream.Close()
				assert.Eventually(t, func() bool {
					for line := range strings.Lines(e.logs.String()) {
						if strings.Contains(line, `"request_id":"`+id+`"`) {
							return strings.Contains(line, `"code":"reset"`)
						}
					}
					return false
				}, 5*time.Second, 10*time.Millisecond, "the stream cut short is logged as such")
				return
			}
		})
	}
}

// TestKeysUnavailableIsUnavailable: while the gateway cannot fetch the
// signing keys (the Auth service down as it starts), a token it cannot
// check is Unavailable, to retry, as the services answer: Unauthenticated
// would send clients to log their users in again.
func TestKeysUnavailableIsUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	inst := e.startIdentity(t, "keys")
	cfg := e.config(t)
	cfg.Tokens.JWKSURL = "http://nosuchsvc" + authntest.JWKSPath
	gw := e.startGateway(t, cfg)
	token := e.auth.Issue()
	for _, client := range bothPaths() {
		c := identityv1connect.NewIdentityServiceClient(client.c, gw.url)
		require.EventuallyWithT(t, func(col *assert.CollectT) {
			_, err := c.GetMe(t.Context(), withToken(connect.NewRequest(&identityv1.GetMeRequest{}), token))
			assert.Equal(col, connect.CodeUnavailable, connect.CodeOf(err), "%s: %v", client.name, err)
		}, 10*time.Second, 20*time.Millisecond)
	}
	_, reached := inst.bearers.Load("Bearer " + token)
	assert.False(t, reached, "refused before reaching the service")
}

// TestNewUpstreamWhileConsulIsDown: a service the gateway knows from its
// catalog but has not called yet, while Consul is away, is answered
// Unavailable at once, not after the route's timeout.
func TestNewUpstreamWhileConsulIsDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startIdentity(t, "id-a")
	identity := e.reg.Resolver("identitysvc")
	t.Cleanup(identity.Close)
	require.Eventually(t, func() bool { return len(identity.Instances()) > 0 }, 15*time.Second, 10*time.Millisecond)
	cfg := e.config(t)
	cfg.Routes.UnaryTimeout = 5 * time.Second
	gw := e.startGateway(t, cfg) // its first catalog has Identity

	e.consul.Stop()
	c := identityv1connect.NewIdentityServiceClient(h2cClient(), gw.url)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err := c.CreateUser(ctx, connect.NewRequest(&identityv1.CreateUserRequest{}))
	assert.Equal(t, connect.CodeUnavailable, connect.CodeOf(err), "%v", err)
	assert.Contains(t, e.logs.String(), "Consul has not answered", "the gateway's log does not say why")
}
