// Command auditsvc runs the Portcullis Audit service: the append-only, hash-chained audit log.
//
// It reads its configuration (see config/default.yaml), opens and migrates
// its PostgreSQL schema, takes from its own role the right to change the
// log, registers in Consul, serves Connect, gRPC and gRPC-Web with
// /healthz, /readyz and /metrics, and shuts down gracefully on SIGINT or
// SIGTERM. Run it with --print-config to see the effective
// configuration, secrets redacted.
//
// `auditsvc verify --file export.ndjson` checks the hash chain of an export
// (ExportEvents written out as JSON, one object per line) without a
// database or configuration; see CHAIN.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/rpc"
	"portcullis.dev/kernel/service"
	"portcullis.dev/proto/audit/v1/auditv1connect"

	"portcullis.dev/auditsvc/config"
	"portcullis.dev/auditsvc/internal/audit"
	"portcullis.dev/auditsvc/internal/handler"
)

const name = "auditsvc"

func main() {
	// verify is an auditor's tool: it needs no configuration, so it is
	// dispatched before any is loaded.
	if len(os.Args) > 1 && os.Args[1] == "verify" {
		code, err := verify(os.Args[2:], os.Stdin, os.Stdout)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s verify: %v\n", name, err)
		}
		os.Exit(code)
	}
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
	// Migrates, then takes from the service's role the right to change the log.
	db, err := audit.Open(ctx, cfg.Database, logger)
	if err != nil {
		return err
	}
	svc := audit.NewService(db.DB, db.Ent, db.Schema, audit.WithConfig(cfg.Audit))
	srv := kit.Server(rpc.WithReadiness("database", db.Ready), rpc.WithCloser(db.Close))
	srv.Handle(auditv1connect.NewAuditServiceHandler(handler.New(svc, logger), srv.HandlerOptions()...))
	return srv.Run(ctx)
}
