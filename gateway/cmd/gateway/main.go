// Command gateway runs the Portcullis API gateway, the single entry point for
// external traffic.
//
// It reads its configuration (see config/default.yaml; the listen address is
// gateway.addr, PORTCULLIS_GATEWAY_ADDR), learns its routes and the healthy
// instances of every service from Consul, serves Connect, gRPC and gRPC-Web
// over HTTP/1.1 and cleartext HTTP/2 with /healthz, /readyz and /metrics
// (the metrics on a listener of their own, gateway.admin_addr, when set),
// and on SIGINT or SIGTERM drains in-flight requests before it exits. Run it
// with --print-config to see the effective configuration, secrets redacted.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/heapfloor"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/service"

	"portcullis.dev/gateway/config"
	"portcullis.dev/gateway/internal/edge"
)

const name = "gateway"

func main() {
	ctx, stop := service.SignalContext(context.Background())
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(service.ExitCode(ctx, err))
	}
}

// run wires the gateway and serves until ctx ends.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := config.Load(args)
	if err != nil {
		return err
	}
	if kconfig.PrintRequested(args) {
		return kconfig.Print(stdout, cfg)
	}
	logger := logging.New(cfg.Logging, logging.WithService(name, service.BuildVersion()))
	defer logging.Flush(logger)
	kconfig.WarnUnknownEnv[config.Config](ctx, logger, os.Environ())
	defer heapfloor.Set(cfg.Gateway.HeapFloorBytes)()
	reg, err := registry.New(cfg.Registry, registry.WithLogger(logger))
	if err != nil {
		return err
	}
	gw, err := edge.New(cfg, reg, edge.WithLogger(logger))
	if err != nil {
		return err
	}
	defer gw.Close()
	ln, err := net.Listen("tcp", cfg.Gateway.Addr)
	if err != nil {
		return fmt.Errorf("listen on gateway.addr: %w", err)
	}
	if cfg.Gateway.AdminAddr == "" {
		return gw.Serve(ctx, ln)
	}
	admin, err := net.Listen("tcp", cfg.Gateway.AdminAddr)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("listen on gateway.admin_addr: %w", err)
	}
	// The admin listener outlives the drain, so that /readyz says it.
	adminCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	adminDone := make(chan error, 1)
	go func() {
		err := gw.ServeAdmin(adminCtx, admin)
		if err != nil && adminCtx.Err() == nil {
			// Traffic goes on without it; the operators must hear of it now.
			logger.Error("admin listener failed", "err", err)
		}
		adminDone <- err
	}()
	err = gw.Serve(ctx, ln)
	stopAdmin()
	return errors.Join(err, <-adminDone)
}
