package rpc_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"connectrpc.com/connect"

	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// A service's main builds a server, mounts its generated handler with the
// server's handler options, and runs it until SIGTERM.
func ExampleServer_Run() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reg, err := registry.New(registry.Config{Addr: "127.0.0.1:8500"})
	if err != nil {
		panic(err)
	}
	srv := rpc.NewServer("identitysvc", "v0.1.0", rpc.Config{Addr: "127.0.0.1:0"},
		rpc.WithRegistry(reg),
		rpc.WithAccessPolicy(&rpc.AccessPolicy{ /* verifiers and authorizer */ }),
	)
	srv.Handle(identityv1connect.NewIdentityServiceHandler(&identityStub{}, srv.HandlerOptions()...))
	if err := srv.Run(ctx); err != nil {
		panic(err)
	}
}

// Another service calls the Identity service through Consul with the
// generated client interface.
func ExampleNewClient() {
	reg, err := registry.New(registry.Config{})
	if err != nil {
		panic(err)
	}
	factory := rpc.NewClientFactory(reg)
	defer factory.Close()
	identity := rpc.NewClient(factory, "identitysvc", identityv1connect.NewIdentityServiceClient)
	resp, err := identity.GetMe(context.Background(), connect.NewRequest(&identityv1.GetMeRequest{}))
	if err != nil {
		fmt.Println(connect.CodeOf(err))
		return
	}
	fmt.Println(resp.Msg.GetUser().GetEmail())
}

// Without a policy every procedure is refused: a service cannot run open
// by mistake.
func ExampleNewServer_noPolicy() {
	srv := rpc.NewServer("identitysvc", "v0.1.0", rpc.Config{DeregisterDelay: 1})
	srv.Handle(identityv1connect.NewIdentityServiceHandler(&identityStub{}, srv.HandlerOptions()...))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, ln) }()

	client := identityv1connect.NewIdentityServiceClient(http.DefaultClient, "http://"+ln.Addr().String())
	_, err := client.GetMe(context.Background(), connect.NewRequest(&identityv1.GetMeRequest{}))
	fmt.Println(connect.CodeOf(err))
	cancel()
	<-done
	// Output: unauthenticated
}
