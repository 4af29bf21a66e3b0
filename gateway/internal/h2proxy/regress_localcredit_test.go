package h2proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"golang.org/x/net/http2"
)

func TestLocalAnswersAreNotCreditedUpstream(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) })
	hs := &http.Server{Handler: mux, Protocols: new(http.Protocols)}
	hs.Protocols.SetUnencryptedHTTP2(true)
	uln, _ := net.Listen("tcp", "127.0.0.1:0")
	go hs.Serve(uln)
	defer hs.Close()

	tr := &Transport{}
	srv := &Server{}
	srv.Handler = func(st *Stream) {
		_, err := st.Forward(context.Background(), tr, uln.Addr().String(), http.Header{}, http.Header{})
		if err == nil {
			t.Error("want error")
		}
		w := st.ResponseWriter()
		w.WriteHeader(503)
		w.Write(make([]byte, 100_000)) // the gateway's own error body
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
		DialTLSContext: func(ctx context.Context, n, a string, _ *tls.Config) (net.Conn, error) { return net.Dial(n, a) }}}
	for i := 0; i < 10; i++ {
		res, err := client.Post("http://"+ln.Addr().String()+"/reset", "a/b", bytes.NewReader(nil))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	// The proxy's own error bodies are not credited to the upstream.
	assert.Eventually(t, func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for _, cs := range tr.conns {
			for _, c := range cs {
				c.out.mu.Lock()
				window := c.recvWin + c.recvUnacked
				c.out.mu.Unlock()
				if window != upstreamConnWindow {
					return false
				}
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond)
}
