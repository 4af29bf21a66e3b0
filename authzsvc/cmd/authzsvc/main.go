// Command authzsvc runs the Portcullis Authz service: roles, permissions and access checks.
//
// It reads its configuration (see config/default.yaml), registers in Consul,
// serves Connect, gRPC and gRPC-Web with /healthz, /readyz and /metrics, and
// shuts down gracefully on SIGINT or SIGTERM. Run it with --print-config to
// see the effective configuration, secrets redacted.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"entgo.io/ent/dialect"

	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/rpc"
	"portcullis.dev/kernel/service"
	"portcullis.dev/proto/authz/v1/authzv1connect"

	"portcullis.dev/authzsvc/config"
	"portcullis.dev/authzsvc/ent"
	"portcullis.dev/authzsvc/internal/authz"
)

const name = "authzsvc"

func main() {
	ctx, stop := service.SignalContext(context.Background())
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(service.ExitCode(ctx, err))
	}
}

// run wires the service and serves until ctx ends.
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
	kit, err := service.New(name, service.BuildVersion(), cfg.Config, logger)
	if err != nil {
		return err
	}
	defer kit.Close()

	db, err := database.NewEntClient(ctx, cfg.Database, ent.Migrations(),
		func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) }, database.WithLogger(logger))
	if err != nil {
		return err
	}
	svc, err := authz.New(db.Ent, db.Schema, cfg.Database.DSN.Value(), cfg.RBAC, authz.WithLogger(logger))
	if err != nil {
		_ = db.Close(ctx)
		return err
	}
	if err := svc.Bootstrap(ctx); err != nil {
		_ = db.Close(ctx)
		return err
	}
	// The service answers its own admin RPCs' permission checks from its
	// decision index: asking itself over the network would cost a round
	// trip and, on a cold start, wait for its own registration in Consul.
	kit.Policy.Authorizer = authz.LocalAuthorizer{S: svc}

	srv := kit.Server(append(kit.OutboxRelay(db.DB),
		rpc.WithBackground("authz change listener", svc.Run),
		rpc.WithReadiness("database", db.Ready),
		rpc.WithCloser(db.Close))...)
	srv.Handle(authzv1connect.NewAuthzServiceHandler(authz.NewHandler(svc), srv.HandlerOptions()...))
	return srv.Run(ctx)
}
