package h2proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// These tests hold the flow-control accounting to what RFC 9113 asks and
// to the memory bounds the package promises, with raw frames where a Go
// client would hide the case.

// rawClient opens an HTTP/2 connection to addr with settings, for frames
// no Go client sends.
func rawClient(t *testing.T, addr string, settings ...http2.Setting) (net.Conn, *http2.Framer) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	_, err = nc.Write([]byte(http2.ClientPreface))
	require.NoError(t, err)
	fr := http2.NewFramer(nc, nc)
	require.NoError(t, fr.WriteSettings(settings...))
	return nc, fr
}

// readFrames hands each frame the peer sends on nc to seen, from a
// goroutine of its own, until the connection ends.
func readFrames(nc net.Conn, seen func(http2.Frame)) {
	go func() {
		rfr := http2.NewFramer(nil, nc)
		for {
			f, err := rfr.ReadFrame()
			if err != nil {
				return
			}
			seen(f)
		}
	}()
}

// writeGet opens stream id with a GET of path and no body.
func writeGet(t *testing.T, fr *http2.Framer, id uint32, path string) {
	t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
		require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}))
}

// windowsWhole reports whether every connection's receive window, what the
// peer may send plus what is owed back, is exactly what was advertised:
// no byte credited twice, none forgotten.
func windowsWhole(conns []*conn, advertised int32) bool {
	for _, c := range conns {
		c.out.mu.Lock()
		window := c.recvWin + c.recvUnacked
		c.out.mu.Unlock()
		if window != advertised {
			return false
		}
	}
	return true
}

func (s *Server) connsForTest() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cs []*conn
	for c := range s.conns {
		cs = append(cs, c)
	}
	return cs
}

func (t *Transport) connsForTest() []*conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	var cs []*conn
	for _, list := range t.conns {
		cs = append(cs, list...)
	}
	return cs
}

// TestOpenStreamsAreBounded: streams the proxy answers itself stay open
// while a client's zero window holds their bodies back (RFC 9113, 5.1.2);
// they count against the limit, or a client could have the proxy hold any
// number of them.
func TestOpenStreamsAreBounded(t *testing.T) {
	srv := &Server{Handler: func(st *Stream) { _, _ = st.ResponseWriter().Write(make([]byte, 100_000)) }}
	nc, fr := rawClient(t, ServeForTest(t, srv), http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	var refused atomic.Int64
	readFrames(nc, func(f http2.Frame) {
		if r, ok := f.(*http2.RSTStreamFrame); ok && r.ErrCode == http2.ErrCodeRefusedStream {
			refused.Add(1)
		}
	})
	const n = 1000
	for i := range uint32(n) {
		writeGet(t, fr, 2*i+1, "/x")
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond) // let the handlers run
		}
	}
	want := int64(n - srv.maxStreams())
	assert.Eventually(t, func() bool { return refused.Load() == want }, 5*time.Second, 10*time.Millisecond,
		"refused %d of %d streams, want %d", refused.Load(), n, want)
	for _, c := range srv.connsForTest() {
		c.mu.Lock()
		assert.LessOrEqual(t, len(c.streams), int(srv.maxStreams()))
		c.mu.Unlock()
	}
}

// TestStalledClientIsCut: a client that opens no window for an answer
// has its stream reset after WriteTimeout, as a client that does not read
// its socket has its connection closed; else it could hold streams, and
// the connection, for ever, and a drain would wait on them.
func TestStalledClientIsCut(t *testing.T) {
	up := ServeH2CForTest(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(make([]byte, 100_000))
	}))
	tr := &Transport{}
	t.Cleanup(tr.Close)
	for _, tc := range []struct {
		name    string
		handler func(*Stream)
	}{
		{"the proxy's own answer", func(st *Stream) { _, _ = st.ResponseWriter().Write(make([]byte, 100_000)) }},
		{"a forwarded answer", func(st *Stream) { _, _ = st.Forward(st.Context(), tr, up, st.Header.Clone(), nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &Server{Handler: tc.handler, WriteTimeout: 200 * time.Millisecond}
			nc, fr := rawClient(t, ServeForTest(t, srv), http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
			reset := make(chan http2.ErrCode, 1)
			readFrames(nc, func(f http2.Frame) {
				if r, ok := f.(*http2.RSTStreamFrame); ok {
					reset <- r.ErrCode
				}
			})
			writeGet(t, fr, 1, "/x")
			select {
			case code := <-reset:
				assert.Equal(t, http2.ErrCodeCancel, code)
			case <-time.After(5 * time.Second):
				t.Fatal("the stream still waits on a client that opens no window")
			}
			assert.Eventually(t, func() bool {
				for _, c := range srv.connsForTest() {
					c.mu.Lock()
					n := len(c.streams)
					c.mu.Unlock()
					if n > 0 {
						return false
					}
				}
				return true
			}, time.Second, 10*time.Millisecond, "the stream is forgotten")
		})
	}
}

// TestDataHeldForRoomGoesOn: data held back for want of room in a
// connection's buffer goes on once the buffer empties, also when a single
// write emptied it (large socket buffers make that the common case).
func TestDataHeldForRoomGoesOn(t *testing.T) {
	const size = 300 << 10
	up := ServeH2CForTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(make([]byte, size))
	}))
	tr := &Transport{}
	t.Cleanup(tr.Close)
	srv := &Server{Handler: func(st *Stream) { _, _ = st.Forward(st.Context(), tr, up, http.Header{}, nil) }}
	addr := ServeForTest(t, srv, func(nc net.Conn) { _ = nc.(*net.TCPConn).SetWriteBuffer(4 << 20) })
	nc, fr := rawClient(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 8 << 20})
	require.NoError(t, nc.(*net.TCPConn).SetReadBuffer(4<<20))
	var (
		mu  sync.Mutex
		got int
	)
	readFrames(nc, func(f http2.Frame) {
		if d, ok := f.(*http2.DataFrame); ok {
			mu.Lock()
			got += len(d.Data())
			mu.Unlock()
		}
	})
	const n = 8
	for i := range uint32(n) {
		writeGet(t, fr, 2*i+1, "/big")
	}
	// The connection window opens only once the responses are under way,
	// so that they pile up in the proxy's buffer.
	time.Sleep(time.Second)
	require.NoError(t, fr.WriteWindowUpdate(0, 1<<31-1-initialWindow))
	assert.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got == n*size
	}, 10*time.Second, 10*time.Millisecond, "responses stalled although the client's windows are open")
}

// refuser is an upstream that refuses every stream once its request
// ended, as a server going away does (RFC 9113, 8.7).
func refuser(t *testing.T) string {
	return RawUpstreamForTest(t, func(fr *http2.Framer, f http2.Frame) {
		switch f := f.(type) {
		case *http2.DataFrame:
			if n := f.Header().Length; n > 0 {
				_ = fr.WriteWindowUpdate(0, n)
			}
			if f.StreamEnded() {
				_ = fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
			}
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				_ = fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
			}
		}
	})
}

// TestRefusedStreamIsCreditedOnce: a request kept to be sent again after a
// refusal was credited to the client when it first arrived; sending or
// dropping the copy must not credit it again.
func TestRefusedStreamIsCreditedOnce(t *testing.T) {
	bad := refuser(t)
	tr := &Transport{}
	t.Cleanup(tr.Close)
	srv := &Server{Handler: func(st *Stream) {
		_, err := st.Forward(st.Context(), tr, bad, http.Header{}, nil)
		var notSent *NotSentError
		assert.True(t, errors.As(err, &notSent), "a refused stream is not sent: %v", err)
		st.ResponseWriter().WriteHeader(http.StatusServiceUnavailable) // as the gateway answers when it gives up
	}}
	base := "http://" + ServeForTest(t, srv)
	client := H2CClient()
	for range 20 {
		res, err := client.Post(base+"/x", "application/octet-stream", bytes.NewReader(make([]byte, 60_000)))
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		assert.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	}
	assert.Eventually(t, func() bool { return windowsWhole(srv.connsForTest(), serverConnWindow) },
		5*time.Second, 10*time.Millisecond)
}

// TestLocalAnswersAreNotCreditedUpstream: the proxy's own answer, after
// the upstream failed, owes the upstream no credit.
func TestLocalAnswersAreNotCreditedUpstream(t *testing.T) {
	up := ServeH2CForTest(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	tr := &Transport{}
	t.Cleanup(tr.Close)
	srv := &Server{Handler: func(st *Stream) {
		_, err := st.Forward(context.Background(), tr, up, http.Header{}, nil)
		assert.Error(t, err)
		w := st.ResponseWriter()
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(make([]byte, 100_000)) // the gateway's own error body
	}}
	base := "http://" + ServeForTest(t, srv)
	client := H2CClient()
	for range 10 {
		res, err := client.Post(base+"/reset", "application/octet-stream", nil)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
	}
	assert.Eventually(t, func() bool { return windowsWhole(tr.connsForTest(), upstreamConnWindow) },
		5*time.Second, 10*time.Millisecond)
}

// TestStreamCreditIsBatched: a stream of many small DATA frames, as a
// server stream of small messages is, is credited in batches, not with a
// WINDOW_UPDATE per frame; each costs the peer a frame to read and often
// the proxy a write of its own. The stream carries more than its window,
// so the upstream, which keeps to the window, needs the batches to finish.
func TestStreamCreditIsBatched(t *testing.T) {
	const frames, size = 6000, 100 // 600 kB, past the 256 KiB window
	var (
		mu      sync.Mutex
		more    = sync.NewCond(&mu)
		window  = int64(upstreamStreamWindow)
		updates int
		stopped bool
	)
	t.Cleanup(func() {
		mu.Lock()
		stopped = true
		more.Broadcast()
		mu.Unlock()
	})
	up := RawUpstreamForTest(t, func(fr *http2.Framer, f http2.Frame) {
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			var block bytes.Buffer
			_ = hpack.NewEncoder(&block).WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: block.Bytes(), EndHeaders: true})
			go func() {
				for i := range frames {
					mu.Lock()
					for window < size && !stopped {
						more.Wait()
					}
					window -= size
					mu.Unlock()
					_ = fr.WriteData(f.StreamID, i == frames-1, make([]byte, size))
				}
			}()
		case *http2.WindowUpdateFrame:
			if f.StreamID != 0 {
				mu.Lock()
				window += int64(f.Increment)
				updates++
				more.Broadcast()
				mu.Unlock()
			}
		}
	})
	tr := &Transport{}
	t.Cleanup(tr.Close)
	srv := &Server{Handler: func(st *Stream) {
		_, err := st.Forward(st.Context(), tr, up, http.Header{}, nil)
		assert.NoError(t, err)
	}}
	base := "http://" + ServeForTest(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/stream", nil)
	require.NoError(t, err)
	res, err := H2CClient().Do(req)
	require.NoError(t, err)
	n, err := io.Copy(io.Discard, res.Body)
	require.NoError(t, err, "the stream stalled")
	_ = res.Body.Close()
	assert.EqualValues(t, frames*size, n)
	mu.Lock()
	defer mu.Unlock()
	assert.LessOrEqual(t, updates, frames*size/streamCreditBatch+1, "%d stream WINDOW_UPDATEs for %d frames", updates, frames)
}

// TestFramesPassOnBeforeAPartialFrame: what the frames a peer sent made
// the proxy write goes out before the proxy waits for the rest of a frame
// that came in part. The frames it read are written in a batch once the
// reader holds no more; a frame cut short (by TCP, or a HEADERS waiting
// for its CONTINUATION) held the batch until the rest came, and an
// upstream connection's batch holds every client's answers.
func TestFramesPassOnBeforeAPartialFrame(t *testing.T) {
	started := make(chan struct{}, 1)
	up := ServeH2CForTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		_, _ = io.Copy(w, r.Body)
	}))
	tr := &Transport{}
	t.Cleanup(tr.Close)
	srv := &Server{Handler: func(st *Stream) {
		_, _ = st.Forward(st.Context(), tr, up, http.Header{}, nil)
	}}
	nc, fr := rawClient(t, ServeForTest(t, srv))
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "proxy"}, {Name: ":path", Value: "/echo"}} {
		require.NoError(t, enc.WriteField(hf))
	}
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true}))
	select {
	case <-started: // the stream is open upstream: its body is passed on as it comes
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached the upstream")
	}
	// The body, then the first bytes of another frame, in one write.
	var out bytes.Buffer
	require.NoError(t, http2.NewFramer(&out, nil).WriteData(1, true, []byte("ping")))
	out.Write([]byte{0, 0, 100, byte(http2.FrameData), 0, 0, 0, 0, 3, 'p', 'a', 'r'})
	_, err := nc.Write(out.Bytes())
	require.NoError(t, err)

	body := make(chan string, 1)
	readFrames(nc, func(f http2.Frame) {
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			body <- string(d.Data())
		}
	})
	select {
	case got := <-body:
		assert.Equal(t, "ping", got)
	case <-time.After(2 * time.Second):
		t.Fatal("the body waited for the rest of the next frame")
	}
}

// TestWaitingRequestArrivesWhole: a request body that waited, for its
// upstream stream to open (the copy kept to send again is the one that
// waits) or to be sent again after a refusal, reaches the upstream byte for
// byte.
func TestWaitingRequestArrivesWhole(t *testing.T) {
	bad := refuser(t)
	good := ServeH2CForTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, r.Body)
	}))
	tr := &Transport{}
	t.Cleanup(tr.Close)
	srv := &Server{Handler: func(st *Stream) {
		if st.Path == "/late" {
			// The whole body arrives, frame after frame, before the
			// upstream stream opens.
			time.Sleep(50 * time.Millisecond)
		} else {
			_, err := st.Forward(st.Context(), tr, bad, http.Header{}, nil)
			var notSent *NotSentError
			if !assert.True(t, errors.As(err, &notSent), "a refused stream is not sent: %v", err) {
				return
			}
		}
		_, err := st.Forward(st.Context(), tr, good, http.Header{}, nil)
		assert.NoError(t, err)
	}}
	base := "http://" + ServeForTest(t, srv)
	client := H2CClient()
	for _, path := range []string{"/again", "/late"} {
		for _, size := range []int{1, 1000, 16_384, 40_000, 60_000} {
			body := make([]byte, size)
			_, _ = rand.Read(body)
			res, err := client.Post(base+path, "application/octet-stream", bytes.NewReader(body))
			require.NoError(t, err)
			got, err := io.ReadAll(res.Body)
			_ = res.Body.Close()
			require.NoError(t, err)
			assert.True(t, bytes.Equal(body, got), "%s: %d bytes sent, %d came back, equal: %v", path, size, len(got), bytes.Equal(body, got))
		}
	}
}
