package h2proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"

	"portcullis.dev/gateway/internal/h2proxy"
)

type identity struct {
	identityv1connect.UnimplementedIdentityServiceHandler
}

func (identity) CreateUser(_ context.Context, req *connect.Request[identityv1.CreateUserRequest]) (*connect.Response[identityv1.CreateUserResponse], error) {
	if req.Msg.GetEmail() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("email is required"))
	}
	res := connect.NewResponse(&identityv1.CreateUserResponse{User: &identityv1.User{
		Email: req.Msg.GetEmail(), DisplayName: req.Msg.GetDisplayName(),
	}})
	res.Header().Set("X-Seen-Forwarded-For", req.Header().Get("X-Forwarded-For"))
	res.Trailer().Set("X-Test-Trailer", "upstream")
	return res, nil
}

type audit struct {
	auditv1connect.UnimplementedAuditServiceHandler
}

func (audit) ExportEvents(ctx context.Context, _ *connect.Request[auditv1.ExportEventsRequest], stream *connect.ServerStream[auditv1.ExportEventsResponse]) error {
	for i := range 200 {
		if err := stream.Send(&auditv1.ExportEventsResponse{Event: &auditv1.Event{Sequence: int64(i + 1), Action: strings.Repeat("a", 1000)}}); err != nil {
			return err
		}
	}
	return nil
}

// upstream serves the contracts and a few raw handlers over h2c.
func upstream(t testing.TB) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(identityv1connect.NewIdentityServiceHandler(identity{}))
	mux.Handle(auditv1connect.NewAuditServiceHandler(audit{}))
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Echo-Bytes")
		n, _ := io.Copy(w, r.Body)
		w.Header().Set("X-Echo-Bytes", itoa(n))
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		for _, k := range []string{"X-Multi", "X-After"} {
			w.Header()["Seen-"+k] = r.Header[k]
		}
	})
	mux.HandleFunc("/wait", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	mux.HandleFunc("/chunks", func(w http.ResponseWriter, r *http.Request) {
		for range 3 {
			_, _ = io.WriteString(w, "chunk\n")
			w.(http.Flusher).Flush()
			time.Sleep(200 * time.Millisecond)
		}
	})
	mux.HandleFunc("/die", func(w http.ResponseWriter, r *http.Request) {
		// Half a response, then the connection is dropped.
		_, _ = w.Write(make([]byte, 64<<10))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	return h2proxy.ServeH2CForTest(t, mux)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// proxy serves srv, forwarding every stream to addr but answering /local
// itself, until the test ends, and returns its base URL.
func proxy(t testing.TB, addr string, srv *h2proxy.Server) string {
	t.Helper()
	tr := &h2proxy.Transport{}
	t.Cleanup(tr.Close)
	srv.Handler = func(st *h2proxy.Stream) {
		if st.Path == "/slow" {
			select { // a handler still deciding when the client gives up
			case <-st.Context().Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
		if st.Path == "/local" {
			w := st.ResponseWriter()
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, strings.Repeat("l", 100_000))
			return
		}
		h := st.Header.Clone()
		h.Set("X-Forwarded-For", "192.0.2.1")
		res, err := st.Forward(st.Context(), tr, addr, h, http.Header{"X-Proxy": {"h2proxy"}})
		if err != nil && !res.Started {
			w := st.ResponseWriter()
			w.Header().Set("X-Error", err.Error())
			w.WriteHeader(http.StatusBadGateway)
		}
	}
	return "http://" + h2proxy.ServeForTest(t, srv)
}

var h2cClient = h2proxy.H2CClient

func TestForwardsRepeatedHeaders(t *testing.T) {
	base := proxy(t, upstream(t), &h2proxy.Server{})
	req, err := http.NewRequest(http.MethodGet, base+"/headers", nil)
	require.NoError(t, err)
	req.Header["X-Multi"] = []string{"a", "b"}
	req.Header["X-After"] = []string{"c"}
	res, err := h2cClient().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	assert.Equal(t, []string{"a", "b"}, res.Header["Seen-X-Multi"])
	assert.Equal(t, []string{"c"}, res.Header["Seen-X-After"])
}

func TestForwardsConnectAndGRPC(t *testing.T) {
	base := proxy(t, upstream(t), &h2proxy.Server{})
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect+proto", nil},
		{"connect+json", []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := identityv1connect.NewIdentityServiceClient(h2cClient(), base, tc.opts...)
			res, err := c.CreateUser(context.Background(), connect.NewRequest(&identityv1.CreateUserRequest{
				Email: "a@example.com", DisplayName: strings.Repeat("x", 1000)}))
			require.NoError(t, err)
			assert.Equal(t, "a@example.com", res.Msg.GetUser().GetEmail())
			assert.Equal(t, "192.0.2.1", res.Header().Get("X-Seen-Forwarded-For"))
			assert.Equal(t, "h2proxy", res.Header().Get("X-Proxy"))
			assert.Equal(t, "upstream", res.Trailer().Get("X-Test-Trailer"))

			_, err = c.CreateUser(context.Background(), connect.NewRequest(&identityv1.CreateUserRequest{}))
			assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))

			a := auditv1connect.NewAuditServiceClient(h2cClient(), base, tc.opts...)
			stream, err := a.ExportEvents(context.Background(), connect.NewRequest(&auditv1.ExportEventsRequest{}))
			require.NoError(t, err)
			var n int64
			for stream.Receive() {
				n++
				assert.Equal(t, n, stream.Msg().GetEvent().GetSequence())
			}
			require.NoError(t, stream.Err())
			assert.EqualValues(t, 200, n)
		})
	}
}

func TestLargeBodiesBothWays(t *testing.T) {
	base := proxy(t, upstream(t), &h2proxy.Server{})
	body := make([]byte, 5<<20) // past every window on the way
	_, _ = rand.Read(body)
	client := h2cClient()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			res, err := client.Post(base+"/echo", "application/octet-stream", bytes.NewReader(body))
			if !assert.NoError(t, err) {
				return
			}
			defer res.Body.Close()
			got, err := io.ReadAll(res.Body)
			assert.NoError(t, err)
			assert.True(t, bytes.Equal(body, got), "echoed body differs")
			assert.Equal(t, itoa(int64(len(body))), res.Trailer.Get("X-Echo-Bytes"))
		})
	}
	wg.Wait()
}

func TestManyConcurrentCalls(t *testing.T) {
	base := proxy(t, upstream(t), &h2proxy.Server{})
	c := identityv1connect.NewIdentityServiceClient(h2cClient(), base)
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 50 {
				_, err := c.CreateUser(context.Background(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"}))
				if !assert.NoError(t, err) {
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestLocalAnswerAndUnreachableUpstream(t *testing.T) {
	base := proxy(t, upstream(t), &h2proxy.Server{})
	res, err := h2cClient().Get(base + "/local")
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Len(t, body, 100_000)

	base = proxy(t, kerneltest.RefusingAddr(t), &h2proxy.Server{})
	res, err = h2cClient().Post(base+"/echo", "text/plain", strings.NewReader("hello"))
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusBadGateway, res.StatusCode)
	assert.Contains(t, res.Header.Get("X-Error"), "not sent")
}

func TestBodyLimitAndCancel(t *testing.T) {
	base := proxy(t, upstream(t), &h2proxy.Server{MaxBodyBytes: 1 << 20})
	res, err := h2cClient().Post(base+"/echo", "application/octet-stream", bytes.NewReader(make([]byte, 3<<20)))
	if err == nil {
		_, err = io.ReadAll(res.Body)
		_ = res.Body.Close()
	}
	if err == nil {
		assert.Equal(t, http.StatusBadGateway, res.StatusCode)
		assert.Contains(t, res.Header.Get("X-Error"), "too large")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/wait", nil)
	_, err = h2cClient().Do(req)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	// The proxy still serves after both.
	c := identityv1connect.NewIdentityServiceClient(h2cClient(), base)
	_, err = c.CreateUser(context.Background(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"}))
	require.NoError(t, err)
}

func TestCancelledUploadsGiveTheWindowBack(t *testing.T) {
	base := proxy(t, upstream(t), &h2proxy.Server{})
	client := h2cClient()
	// Each upload fills its stream while the handler decides, then the
	// client resets it: together far past the connection's 1 MiB window.
	for range 8 {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/slow", bytes.NewReader(make([]byte, 192<<10)))
		go func() { time.Sleep(100 * time.Millisecond); cancel() }()
		_, err := client.Do(req)
		assert.Error(t, err)
		cancel()
	}
	// The connection still carries a large upload.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/echo", bytes.NewReader(make([]byte, 2<<20)))
	res, err := client.Do(req)
	require.NoError(t, err)
	n, err := io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	require.NoError(t, err)
	assert.EqualValues(t, 2<<20, n)
}

func TestUpstreamDyingMidResponse(t *testing.T) {
	base := proxy(t, upstream(t), &h2proxy.Server{})
	client := h2cClient()
	for range 5 {
		res, err := client.Get(base + "/die")
		if err == nil {
			_, err = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
		}
		assert.Error(t, err, "a cut response is not passed off as whole")
	}
	// The proxy dials again and serves; closing it (in Cleanup) returns.
	c := identityv1connect.NewIdentityServiceClient(client, base)
	_, err := c.CreateUser(context.Background(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"}))
	require.NoError(t, err)
}

// TestExpectContinuePassesThrough: a client that sends Expect:
// 100-continue waits for the 100 before its body; the upstream's 100 goes
// to it, instead of leaving it to its own timeout.
func TestExpectContinuePassesThrough(t *testing.T) {
	base := proxy(t, upstream(t), &h2proxy.Server{})
	tr := &http.Transport{Protocols: new(http.Protocols), ExpectContinueTimeout: 5 * time.Second}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	req, err := http.NewRequest(http.MethodPost, base+"/echo", strings.NewReader("body"))
	require.NoError(t, err)
	req.Header.Set("Expect", "100-continue")
	start := time.Now()
	res, err := tr.RoundTrip(req)
	require.NoError(t, err)
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, "body", string(body))
	assert.Less(t, time.Since(start), 2*time.Second, "the client waited out its continue timeout")
}

// TestUpstreamFailureIsNotTheClientLeaving: a response the upstream cut
// short leaves the stream's context alive when Forward returns, so the
// caller can tell a failing instance from a client that left, and count it.
func TestUpstreamFailureIsNotTheClientLeaving(t *testing.T) {
	addr := upstream(t)
	tr := &h2proxy.Transport{}
	t.Cleanup(tr.Close)
	type outcome struct {
		res         h2proxy.Result
		err, ctxErr error
	}
	got := make(chan outcome, 1)
	srv := &h2proxy.Server{Handler: func(st *h2proxy.Stream) {
		res, err := st.Forward(st.Context(), tr, addr, st.Header.Clone(), nil)
		got <- outcome{res, err, st.Context().Err()}
	}}
	base := "http://" + h2proxy.ServeForTest(t, srv)
	res, err := h2cClient().Get(base + "/die")
	if err == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
	}
	o := <-got
	require.Error(t, o.err)
	assert.True(t, o.res.Started, "the response had started")
	assert.NoError(t, o.ctxErr, "the client did not leave")
}

func TestShutdownDrainsStreamsInFlight(t *testing.T) {
	srv := &h2proxy.Server{}
	base := proxy(t, upstream(t), srv)
	res, err := h2cClient().Get(base + "/chunks")
	require.NoError(t, err)
	defer res.Body.Close()
	first := make([]byte, len("chunk\n"))
	_, err = io.ReadFull(res.Body, first)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- srv.Shutdown(ctx) }()

	rest, err := io.ReadAll(res.Body)
	require.NoError(t, err, "the stream in flight ends whole")
	assert.Equal(t, "chunk\nchunk\n", string(rest))
	select {
	case err := <-shutdown:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last stream")
	}
	_, err = h2cClient().Get(base + "/chunks")
	assert.Error(t, err, "no new connection is served after Shutdown")
}
