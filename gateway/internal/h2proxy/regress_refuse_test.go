package h2proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"golang.org/x/net/http2"
)

// refuser: raw h2 server that refuses every stream once its request ended.
func refuser(t *testing.T) string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, len(http2.ClientPreface))
				io.ReadFull(nc, buf)
				fr := http2.NewFramer(nc, nc)
				fr.WriteSettings()
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							fr.WriteSettingsAck()
						}
					case *http2.DataFrame:
						if n := f.Header().Length; n > 0 {
							fr.WriteWindowUpdate(0, n)
						}
						if f.StreamEnded() {
							fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
						}
					case *http2.HeadersFrame:
						if f.StreamEnded() {
							fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
						}
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func TestRefusedStreamIsCreditedOnce(t *testing.T) {
	bad := refuser(t)
	tr := &Transport{}
	srv := &Server{}
	srv.Handler = func(st *Stream) {
		var nse *NotSentError
		_, err := st.Forward(context.Background(), tr, bad, http.Header{}, http.Header{})
		if !errors.As(err, &nse) {
			t.Errorf("want NotSent, got %v", err)
		}
		st.ResponseWriter().WriteHeader(503) // edge gives up: answered locally
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
	client := &http.Client{Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) {
			return net.Dial(n, a)
		}}}
	for i := 0; i < 20; i++ {
		res, err := client.Post("http://"+ln.Addr().String()+"/x", "a/b", bytes.NewReader(make([]byte, 60000)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	// Every byte the client sent was credited once: its window is whole,
	// not larger.
	assert.Eventually(t, func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		for c := range srv.conns {
			c.out.mu.Lock()
			window := c.recvWin + c.recvUnacked
			c.out.mu.Unlock()
			if window != serverConnWindow {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond)
}
