package h2proxy

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"portcullis.dev/kernel/kerneltest"
)

// ServeForTest serves srv on a loopback listener until the test ends,
// taking each connection's preface as the gateway's listener does, and
// returns its address. prepare, if given, sees each connection first.
func ServeForTest(t testing.TB, srv *Server, prepare ...func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			for _, p := range prepare {
				p(nc)
			}
			go func() {
				preface := make([]byte, len(Preface))
				if _, err := io.ReadFull(nc, preface); err != nil || string(preface) != Preface {
					_ = nc.Close()
					return
				}
				srv.ServeConn(nc)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		srv.Close()
	})
	return ln.Addr().String()
}

// ServeH2CForTest serves h over cleartext HTTP/2 on loopback until the test
// ends and returns its address: an upstream as the services are.
func ServeH2CForTest(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// H2CClient speaks HTTP/2 with prior knowledge, as gRPC clients do.
func H2CClient() *http.Client {
	t := &http.Transport{Protocols: new(http.Protocols)}
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t}
}

// RawUpstreamForTest serves, until the test ends, an HTTP/2 upstream of
// raw frames: it sends its settings, acknowledges the peer's, and hands
// every other frame, headers decoded, to serve. It returns its address.
func RawUpstreamForTest(t testing.TB, serve func(fr *http2.Framer, f http2.Frame)) string {
	t.Helper()
	return kerneltest.ServeTCP(t, func(nc net.Conn) {
		if _, err := io.ReadFull(nc, make([]byte, len(http2.ClientPreface))); err != nil {
			return
		}
		fr := http2.NewFramer(nc, nc)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		_ = fr.WriteSettings()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if sf, ok := f.(*http2.SettingsFrame); ok {
				if !sf.IsAck() {
					_ = fr.WriteSettingsAck()
				}
				continue
			}
			serve(fr, f)
		}
	})
}
