package edge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/gateway/config"
	"portcullis.dev/kernel/rpc"
	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// TestHTTP1ReadTimeoutBoundsTheRequestOnly: on HTTP/1.1 limits.read_timeout
// bounds how long a client takes to send its request, not how long the
// answer runs: a browser's server stream (gRPC-Web, connect-web) goes on
// past it, while a body sent too slowly is cut.
func TestHTTP1ReadTimeoutBoundsTheRequestOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	audit := &auditServer{release: make(chan struct{}), events: 2}
	e.startAudit(t, audit)
	e.startIdentity(t, "one")
	cfg := e.config(t)
	cfg.Limits.ReadTimeout = 300 * time.Millisecond
	gw := e.startGateway(t, cfg)

	t.Run("a server stream outlives it", func(t *testing.T) {
		// gRPC-Web, the request's one empty message sent chunked: net/http
		// then reads on past the body's end, to learn of the client
		// leaving, and clears the connection's whole-request deadline for
		// that read (golang/go#18447 was about that deadline).
		open := func() (io.ReadCloser, error) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(gw.url, "http://"))
			if err != nil {
				return nil, err
			}
			_, _ = fmt.Fprintf(conn, "POST /portcullis.audit.v1.AuditService/ExportEvents HTTP/1.1\r\nHost: gw\r\n"+
				"Content-Type: application/grpc-web+proto\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n"+
				"5\r\n\x00\x00\x00\x00\x00\r\n0\r\n\r\n", e.auth.Issue())
			_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err == nil {
				first := make([]byte, 5) // the first event's frame header
				if _, err = io.ReadFull(res.Body, first); err == nil {
					return struct {
						io.Reader
						io.Closer
					}{res.Body, conn}, nil
				}
			}
			_ = conn.Close()
			return nil, err
		}
		var body io.ReadCloser
		require.Eventually(t, func() bool {
			var err error
			body, err = open()
			return err == nil
		}, 15*time.Second, 50*time.Millisecond, "the stream never started")
		defer body.Close()
		time.Sleep(3 * cfg.Limits.ReadTimeout)
		close(audit.release)
		rest, err := io.ReadAll(body)
		require.NoError(t, err, "the stream was cut")
		assert.Contains(t, string(rest), "grpc-status: 0", "the stream did not end with its trailers")
	})

	t.Run("a slow body is cut", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(gw.url, "http://"))
		require.NoError(t, err)
		defer conn.Close()
		start := time.Now()
		_, err = fmt.Fprint(conn, "POST /portcullis.identity.v1.IdentityService/CreateUser HTTP/1.1\r\nHost: gw\r\n"+
			"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":")
		require.NoError(t, err)
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			_ = res.Body.Close()
			assert.GreaterOrEqual(t, res.StatusCode, 400, "a request cut short was answered %d", res.StatusCode)
		}
		assert.Less(t, time.Since(start), 5*time.Second, "the slow body was not cut near read_timeout")
	})
}

// TestExpectContinueKeepsTheAnswer: a client's Expect: 100-continue is
// answered by the gateway and not passed on, so the service's 100 does not
// replace the answer's status in the metrics nor wipe the fields the
// gateway sets on it.
func TestExpectContinueKeepsTheAnswer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startIdentity(t, "one")
	gw := e.startGateway(t, generousLimits(e.config(t)))
	token := e.auth.Issue()
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost,
			gw.url+"/portcullis.identity.v1.IdentityService/GetMe", strings.NewReader(`{}`))
		require.NoError(ct, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Expect", "100-continue")
		res, err := http.DefaultClient.Do(req)
		require.NoError(ct, err)
		_ = res.Body.Close()
		assert.Equal(ct, http.StatusOK, res.StatusCode)
		assert.NotEmpty(ct, res.Header.Get("Ratelimit-Limit"), "the gateway's fields were wiped")
	}, 15*time.Second, 50*time.Millisecond)
	for series := range scrape(t, gw.url) {
		assert.NotContains(t, series, `code="100"`, "the service's 100 was taken for the answer")
	}
}

// TestHTTP1WriteTimeoutBoundsOneWrite: on HTTP/1.1, as on HTTP/2,
// limits.write_timeout bounds one write the client does not take, not the
// whole answer: a server stream the client reads goes on past it, and a
// keep-alive connection idle for longer still answers its next request.
func TestHTTP1WriteTimeoutBoundsOneWrite(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	audit := &auditServer{release: make(chan struct{}), events: 2}
	e.startAudit(t, audit)
	cfg := e.config(t)
	cfg.Limits.WriteTimeout = 300 * time.Millisecond
	gw := e.startGateway(t, cfg)

	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}} // one keep-alive connection
	c := auditv1connect.NewAuditServiceClient(client, gw.url, connect.WithGRPCWeb())
	var stream *connect.ServerStreamForClient[auditv1.ExportEventsResponse]
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		s, err := c.ExportEvents(t.Context(), withToken(connect.NewRequest(&auditv1.ExportEventsRequest{}), e.auth.Issue()))
		require.NoError(ct, err)
		if !assert.True(ct, s.Receive(), "first event: %v", s.Err()) {
			_ = s.Close()
			return
		}
		stream = s
	}, 15*time.Second, 50*time.Millisecond)
	time.Sleep(3 * cfg.Limits.WriteTimeout)
	close(audit.release)
	require.True(t, stream.Receive(), "the stream was cut: %v", stream.Err())
	assert.False(t, stream.Receive())
	require.NoError(t, stream.Err())
	require.NoError(t, stream.Close())

	time.Sleep(2 * cfg.Limits.WriteTimeout)
	for range 2 {
		res, err := client.Get(gw.url + "/healthz")
		require.NoError(t, err, "a keep-alive connection kept a stale write deadline")
		_ = res.Body.Close()
		assert.Equal(t, http.StatusOK, res.StatusCode)
		time.Sleep(2 * cfg.Limits.WriteTimeout)
	}
}

// TestEarlyHintsKeepTheAnswer: a service's 1xx answer (103 Early Hints)
// goes to an HTTP/1.1 client, and the final answer still carries the
// fields the gateway set, which ReverseProxy clears after each 1xx.
func TestEarlyHintsKeepTheAnswer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.serve(t, "identitysvc", &instance{}, func(srv *rpc.Server) {
		path, h := identityv1connect.NewIdentityServiceHandler(&identityServer{name: "hints"}, srv.HandlerOptions()...)
		srv.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</app.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Set("Vary", "Accept") // the answer's own, beside the gateway's
			h.ServeHTTP(w, r)
		}))
	})
	cfg := generousLimits(e.config(t))
	cfg.CORS.AllowedOrigins = []string{"http://app.example"} // the gateway sets Vary: Origin
	gw := e.startGateway(t, cfg)
	token := e.auth.Issue()
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		var hints []string
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
				hints = append(hints, fmt.Sprint(code, " ", header.Get("Link")))
				return nil
			},
		})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost,
			gw.url+"/portcullis.identity.v1.IdentityService/GetMe", strings.NewReader(`{}`))
		require.NoError(ct, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		require.NoError(ct, err)
		_ = res.Body.Close()
		assert.Equal(ct, http.StatusOK, res.StatusCode)
		assert.Equal(ct, []string{"103 </app.css>; rel=preload"}, hints)
		assert.NotEmpty(ct, res.Header.Get("Ratelimit-Limit"), "the gateway's fields were wiped")
		assert.NotEmpty(ct, res.Header.Get("X-Request-Id"), "the gateway's fields were wiped")
		assert.Subset(ct, varies(res.Header), []string{"Origin", "Accept"}, "the gateway's Vary and the service's are not both kept")
	}, 15*time.Second, 50*time.Millisecond)
	for series := range scrape(t, gw.url) {
		assert.NotContains(t, series, `code="103"`, "the service's 103 was taken for the answer")
	}
}

// varies lists the names a response's Vary fields give.
func varies(h http.Header) (names []string) {
	for _, v := range h.Values("Vary") {
		for n := range strings.SplitSeq(v, ",") {
			names = append(names, strings.TrimSpace(n))
		}
	}
	return names
}

// generousLimits turns rate limiting on with limits no test reaches, so
// that every answer carries the RateLimit-* fields the gateway sets.
func generousLimits(cfg config.Config) config.Config {
	cfg.RateLimit.Enabled = true
	cfg.RateLimit.IPRate, cfg.RateLimit.IPBurst = 1000, 1000
	cfg.RateLimit.UserRate, cfg.RateLimit.UserBurst = 1000, 1000
	return cfg
}
