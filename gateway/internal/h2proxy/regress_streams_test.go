package h2proxy

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func TestOpenStreamsAreBounded(t *testing.T) {
	srv := &Server{}
	srv.Handler = func(st *Stream) {
		st.ResponseWriter().Write(make([]byte, 100_000))
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, len(Preface))
				io.ReadFull(nc, buf)
				srv.ServeConn(nc)
			}()
		}
	}()
	nc, _ := net.Dial("tcp", ln.Addr().String())
	nc.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(nc, nc)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	var refused atomic.Int64
	go func() {
		rfr := http2.NewFramer(nil, nc)
		for {
			f, err := rfr.ReadFrame()
			if err != nil {
				return
			}
			if r, ok := f.(*http2.RSTStreamFrame); ok && r.ErrCode == http2.ErrCodeRefusedStream {
				refused.Add(1)
			}
		}
	}()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	const n int64 = 2000
	for i := range n {
		hb.Reset()
		for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/x"}} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Streams answered by the proxy itself stay open while the client's
	// zero window holds their bodies back; they count against the limit.
	assert.Eventually(t, func() bool { return refused.Load() == n-int64(srv.maxStreams()) }, 5*time.Second, 10*time.Millisecond,
		"refused %d of %d", refused.Load(), n)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for c := range srv.conns {
		c.mu.Lock()
		assert.LessOrEqual(t, len(c.streams), int(srv.maxStreams()))
		c.mu.Unlock()
	}
}
