package rpc_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// BenchmarkFactoryOverhead compares a call through the discovery-backed
// factory with the same call from a plain Connect client to the fixed
// address of the same server, both over h2c, in alternating batches so
// drift on the machine hits both alike. The ratio is the figure of merit
// (target: under 1.10x).
func BenchmarkFactoryOverhead(b *testing.B) {
	consul := kerneltest.StartConsul(b)
	reg, err := registry.New(registry.Config{Addr: consul.Addr()})
	require.NoError(b, err)

	// A bare server: this measures the client side.
	mux := http.NewServeMux()
	mux.Handle(identityv1connect.NewIdentityServiceHandler(&identityStub{}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: p}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(b, reg.Client().Agent().ServiceRegister(agentRegistration("benchsvc", port)))

	plain := identityv1connect.NewIdentityServiceClient(newH2CClient(), "http://"+ln.Addr().String())
	factory := rpc.NewClientFactory(reg)
	b.Cleanup(factory.Close)
	viaFactory := rpc.NewClient(factory, "benchsvc", identityv1connect.NewIdentityServiceClient)

	ctx := context.Background()
	call := func(c identityv1connect.IdentityServiceClient) {
		if _, err := c.CreateUser(ctx, connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"})); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for { // wait until the instance is healthy and resolved
		_, err := viaFactory.CreateUser(ctx, connect.NewRequest(&identityv1.CreateUserRequest{}))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range 200 { // warm both connections
		call(plain)
		call(viaFactory)
	}

	const batch = 50
	var plainTime, factoryTime time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		n := min(batch, b.N-done)
		start := time.Now()
		for range n {
			call(plain)
		}
		plainTime += time.Since(start)
		start = time.Now()
		for range n {
			call(viaFactory)
		}
		factoryTime += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(plainTime.Nanoseconds())/float64(b.N), "plain-ns/call")
	b.ReportMetric(float64(factoryTime.Nanoseconds())/float64(b.N), "factory-ns/call")
	b.ReportMetric(float64(factoryTime)/float64(plainTime), "x-vs-plain")
}
