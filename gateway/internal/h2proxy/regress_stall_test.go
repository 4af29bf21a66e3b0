package h2proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const respSize = 300 << 10

func bigUpstream(t *testing.T) string {
	mux := http.NewServeMux()
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, respSize))
	})
	srv := &http.Server{Handler: mux, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestDataHeldForRoomGoesOn(t *testing.T) {
	up := bigUpstream(t)
	tr := &Transport{}
	srv := &Server{}
	srv.Handler = func(st *Stream) {
		st.Forward(context.Background(), tr, up, http.Header{}, http.Header{})
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			nc.(*net.TCPConn).SetWriteBuffer(4 << 20)
			go func() {
				buf := make([]byte, len(Preface))
				io.ReadFull(nc, buf)
				srv.ServeConn(nc)
			}()
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc.(*net.TCPConn).SetReadBuffer(4 << 20)
	nc.Write([]byte(http2.ClientPreface))
	fr := http2.NewFramer(nc, nc)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 8 << 20})
	var mu sync.Mutex
	got := map[uint32]int{}
	ended := map[uint32]bool{}
	go func() {
		rfr := http2.NewFramer(nil, nc)
		for {
			f, err := rfr.ReadFrame()
			if err != nil {
				return
			}
			mu.Lock()
			switch f := f.(type) {
			case *http2.DataFrame:
				got[f.StreamID] += len(f.Data())
				if f.StreamEnded() {
					ended[f.StreamID] = true
				}
			case *http2.RSTStreamFrame:
				t.Logf("rst %d %v", f.StreamID, f.ErrCode)
			}
			mu.Unlock()
		}
	}()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	const n = 8
	for i := 0; i < n; i++ {
		hb.Reset()
		for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", "/big"}} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	}
	time.Sleep(time.Second)
	fr.WriteWindowUpdate(0, 1<<31-1-65535)
	// Data held back for room in the proxy's buffer goes on once the
	// buffer empties, even when a single write emptied it.
	assert.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		total := 0
		for id := uint32(1); id < 2*n; id += 2 {
			total += got[id]
		}
		return total == n*respSize
	}, 10*time.Second, 10*time.Millisecond, "responses stalled although the client's windows are open")
}
