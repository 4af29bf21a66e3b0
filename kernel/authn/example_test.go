package authn_test

import (
	"context"
	"errors"
	"fmt"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
)

func ExampleVerifier() {
	// A stand-in for the Auth service. In a service, the config names
	// http://authsvc/.well-known/jwks.json and the kernel's discovery-backed
	// client resolves "authsvc":
	//
	//	v, err := authn.NewVerifier(cfg.Authn.Config, authn.WithHTTPClient(client), authn.WithLogger(logger))
	auth := authntest.NewServer(nil)
	defer auth.Close()

	v, err := authn.NewVerifier(auth.Config(), authn.WithHTTPClient(auth.Client()))
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()

	p, err := v.Verify(ctx, auth.Issue(authntest.WithSubject("user-42")))
	fmt.Println(p.Kind, p.Subject, err)

	_, err = v.Verify(ctx, auth.Issue(authntest.WithAlgNone()))
	fmt.Println(errors.Is(err, authn.ErrTokenInvalid))
	// Output:
	// user user-42 <nil>
	// true
}

func ExampleServiceTokenSource() {
	// Both services read the same service_key from their configuration.
	cfg := authntest.ServiceConfig()

	// identitysvc attaches a token to its call to auditsvc ...
	src, err := authn.NewServiceTokenSource("identitysvc", cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	token, err := src.Token("auditsvc")
	if err != nil {
		fmt.Println(err)
		return
	}

	// ... and auditsvc verifies it.
	v, err := authn.NewServiceVerifier("auditsvc", cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := v.Verify(context.Background(), token)
	fmt.Println(p.Kind, p.Subject, err)
	// Output: service identitysvc <nil>
}

func ExampleFromContext() {
	// The RPC layer's access interceptor stores the verified principal ...
	ctx := authn.NewContext(context.Background(), authn.Principal{Kind: authn.KindUser, Subject: "user-42"})

	// ... and a handler reads it.
	if p, ok := authn.FromContext(ctx); ok {
		fmt.Println(p.Kind, p.Subject)
	}
	// Output: user user-42
}
