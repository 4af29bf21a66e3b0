package h2proxy

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// TestUpstreamThatAnswersNothingIsClosed: an upstream gone without a
// word (its host powered off) fails the streams waiting on it once it
// leaves a PING unanswered, instead of holding them for their timeout.
func TestUpstreamThatAnswersNothingIsClosed(t *testing.T) {
	silent := RawUpstreamForTest(t, func(*http2.Framer, http2.Frame) {})
	tr := &Transport{PingInterval: 50 * time.Millisecond, PingTimeout: 100 * time.Millisecond}
	t.Cleanup(tr.Close)
	failed := make(chan error, 1)
	srv := &Server{Handler: func(st *Stream) {
		_, err := st.Forward(context.Background(), tr, silent, http.Header{}, nil)
		failed <- err
		st.ResponseWriter().WriteHeader(http.StatusBadGateway)
	}}
	base := "http://" + ServeForTest(t, srv)
	go func() {
		if res, err := H2CClient().Get(base + "/waits"); err == nil {
			_ = res.Body.Close()
		}
	}()
	select {
	case err := <-failed:
		assert.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the stream still waits on an upstream that answers nothing")
	}
	assert.Eventually(t, func() bool { return len(tr.connsForTest()) == 0 }, time.Second, 10*time.Millisecond,
		"the dead connection is forgotten, so the next call dials again")
}

// TestQuietUpstreamThatAnswersPingsStays: a stream may wait long for its
// answer (a server stream with nothing to send): an upstream that answers
// the PINGs keeps its connection and the stream its answer.
func TestQuietUpstreamThatAnswersPingsStays(t *testing.T) {
	var (
		pings  atomic.Int32
		writes sync.Mutex // a framer's writes are not safe for concurrent use
	)
	quiet := RawUpstreamForTest(t, func(fr *http2.Framer, f http2.Frame) {
		switch f := f.(type) {
		case *http2.PingFrame:
			pings.Add(1)
			writes.Lock()
			_ = fr.WritePing(true, f.Data)
			writes.Unlock()
		case *http2.MetaHeadersFrame:
			id := f.StreamID
			go func() {
				time.Sleep(600 * time.Millisecond)
				writes.Lock()
				defer writes.Unlock()
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0x88}, EndStream: true, EndHeaders: true}) // :status 200
			}()
		}
	})
	tr := &Transport{PingInterval: 100 * time.Millisecond, PingTimeout: 400 * time.Millisecond}
	t.Cleanup(tr.Close)
	srv := &Server{Handler: func(st *Stream) {
		_, err := st.Forward(context.Background(), tr, quiet, http.Header{}, nil)
		assert.NoError(t, err)
	}}
	res, err := H2CClient().Get("http://" + ServeForTest(t, srv) + "/slow")
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
	assert.Positive(t, pings.Load(), "the quiet connection was pinged")
}
