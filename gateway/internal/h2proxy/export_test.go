package h2proxy

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
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
