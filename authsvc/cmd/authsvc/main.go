// Command authsvc runs the Portcullis Auth service: login, access and refresh tokens, JWKS.
//
// It reads its configuration (see config/default.yaml), registers in Consul,
// serves Connect, gRPC and gRPC-Web with /healthz, /readyz and /metrics, and
// shuts down gracefully on SIGINT or SIGTERM. Run it with --print-config to
// see the effective configuration, secrets redacted.
package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"

	"entgo.io/ent/dialect"

	"portcullis.dev/kernel/authn"
	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/rpc"
	"portcullis.dev/kernel/service"
	"portcullis.dev/proto/auth/v1/authv1connect"
	"portcullis.dev/proto/identity/v1/identityv1connect"

	"portcullis.dev/authsvc/config"
	"portcullis.dev/authsvc/ent"
	"portcullis.dev/authsvc/internal/auth"
	"portcullis.dev/authsvc/internal/handler"
	"portcullis.dev/authsvc/internal/keys"
)

const name = "authsvc"

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

	kek, err := cfg.Keys.Bytes()
	if err != nil {
		return err
	}
	sealer, err := keys.NewSealer(kek)
	if err != nil {
		return err
	}
	db, err := database.NewEntClient(ctx, cfg.Database, ent.Migrations(),
		func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) },
		database.WithLogger(logger))
	if err != nil {
		return err
	}
	keyring := keys.NewKeyring(db.Ent, sealer, keys.Config{
		Alg:              cfg.Auth.SigningAlg,
		RotationInterval: cfg.Auth.RotationInterval,
		// A retired key stays published until every token it signed has
		// expired at every verifier, leeway included.
		Retention: cfg.Auth.AccessTTL + cmp.Or(cfg.Tokens.Leeway, authn.DefaultLeeway),
	}, nil, keys.WithLogger(logger))
	// The first key is made before the service registers, so no verifier
	// ever sees an empty key set.
	if err := keyring.Init(ctx); err != nil {
		_ = db.Close(context.WithoutCancel(ctx))
		return err
	}
	svc := auth.New(db.Ent, keyring, sealer,
		rpc.NewClient(kit.Clients, "identitysvc", identityv1connect.NewIdentityServiceClient),
		auth.Config{
			Issuer:               cfg.Auth.Issuer,
			Audience:             cfg.Auth.Audience,
			AccessTTL:            cfg.Auth.AccessTTL,
			RefreshIdleTTL:       cfg.Auth.RefreshIdleTTL,
			RefreshAbsoluteTTL:   cfg.Auth.RefreshAbsoluteTTL,
			TOTPIssuer:           cfg.Auth.TOTPIssuer,
			RequireVerifiedEmail: cfg.Auth.RequireVerifiedEmail,
			TOTPLockout: auth.TOTPLockout{
				Threshold: cfg.Auth.TOTPLockout.Threshold,
				Window:    cfg.Auth.TOTPLockout.Window,
				Duration:  cfg.Auth.TOTPLockout.Duration,
			},
		})

	srv := kit.Server(append(kit.OutboxRelay(db.DB),
		rpc.WithReadiness("database", db.Ready),
		rpc.WithCloser(db.Close))...)
	srv.Handle(authv1connect.NewAuthServiceHandler(handler.New(svc, logger), srv.HandlerOptions()...))
	srv.HandleHTTP(handler.JWKSPath, handler.NewJWKSHandler(keyring, logger))
	return srv.Run(ctx)
}
