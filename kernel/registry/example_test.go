package registry_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"

	"portcullis.dev/kernel/registry"
)

// A service registers itself while it serves, and finds the instances of
// the services it calls through resolvers. (Not run: it needs a Consul
// agent on 127.0.0.1:8500.)
func Example() {
	ctx := context.Background()
	reg, err := registry.New(registry.Config{Addr: "127.0.0.1:8500"}, registry.WithLogger(slog.Default()))
	if err != nil {
		log.Fatal(err)
	}

	id, err := reg.Register(ctx, registry.Instance{
		Service:         "identity",
		Address:         "10.0.0.7",
		Port:            8080,
		Version:         "v0.3.0",
		ConnectServices: []string{"portcullis.identity.v1.IdentityService"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := reg.Deregister(ctx, id); err != nil {
			log.Print(err)
		}
	}()

	authz := reg.Resolver("authz")
	defer authz.Close()
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := authz.Wait(waitCtx); err != nil {
		log.Fatal(err)
	}
	for _, inst := range authz.Instances() {
		fmt.Println(inst.HostPort(), inst.Version)
	}
}

// The gateway learns which Consul service serves each Connect service, and
// follows changes. (Not run: it needs a Consul agent.)
func ExampleRegistry_WatchCatalog() {
	reg, err := registry.New(registry.Config{})
	if err != nil {
		log.Fatal(err)
	}
	catalog := reg.WatchCatalog()
	defer catalog.Close()
	for range catalog.Updates() {
		for connect, service := range catalog.Routes() {
			fmt.Printf("/%s/* -> %s\n", connect, service)
		}
	}
}

func ExampleInstance_HostPort() {
	fmt.Println(registry.Instance{Address: "10.0.0.7", Port: 8080}.HostPort())
	fmt.Println(registry.Instance{Address: "fd00::7", Port: 8080}.HostPort())
	// Output:
	// 10.0.0.7:8080
	// [fd00::7]:8080
}

func ExampleConfig_Validate() {
	cfg := registry.Config{CheckInterval: 500 * time.Millisecond}
	fmt.Println(cfg.Validate())
	// Output:
	// config: check_interval: must be 0 (the default, 2s) or at least 1s, got 500ms
}
