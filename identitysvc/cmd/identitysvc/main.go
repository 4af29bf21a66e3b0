// Command identitysvc runs the Portcullis Identity service: users, passwords, email verification and reset.
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
	"portcullis.dev/proto/auth/v1/authv1connect"

	"portcullis.dev/identitysvc/config"
	"portcullis.dev/identitysvc/ent"
	"portcullis.dev/identitysvc/internal/api"
	"portcullis.dev/identitysvc/internal/authclient"
	"portcullis.dev/identitysvc/internal/identity"
)

const name = "identitysvc"

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
	db, err := database.NewEntClient(ctx, cfg.Database, ent.Migrations(), newEnt, database.WithLogger(logger))
	if err != nil {
		return err
	}
	mailer, err := identity.NewMailer(cfg.Mail, logger)
	if err != nil {
		return err
	}
	kit, err := service.New(name, service.BuildVersion(), cfg.Config, logger)
	if err != nil {
		return err
	}
	defer kit.Close()
	users, err := identity.NewService(db.Ent, cfg.Identity, mailer, identity.WithLogger(logger),
		identity.WithSessionEnder(authclient.NewSessions(rpc.NewClient(kit.Clients, "authsvc", authv1connect.NewAuthServiceClient))),
		identity.WithAuthority(kit.Authz))
	if err != nil {
		return err
	}
	srv := kit.Server(append(kit.OutboxRelay(db.DB),
		rpc.WithCollectors(users.Collectors()...),
		rpc.WithBackground("session end retries", users.RetrySessionEnds),
		rpc.WithReadiness("database", db.Ready),
		// Mail already accepted goes out, and the first tries of session
		// ends finish, before the process ends; ends still queued are
		// tried by the next instance to run.
		rpc.WithCloser(users.Drain),
		rpc.WithCloser(db.Close),
	)...)
	srv.Handle(api.NewServiceHandler(users, srv.HandlerOptions()...))
	return srv.Run(ctx)
}

func newEnt(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) }
