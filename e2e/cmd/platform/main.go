// Command platform runs the whole Portcullis platform locally. It backs the
// Taskfile's up, start and stop tasks:
//
//	platform up      run everything in the foreground; Ctrl-C stops it all
//	platform start   the same in the background; returns once healthy
//	platform stop    stop what start started
//
// Environment: PORTCULLIS_CONSUL_ADDR (use this Consul agent instead of a dev
// agent), PORTCULLIS_DATABASE_URL (the PostgreSQL to use),
// PORTCULLIS_GATEWAY_ADDR (default 127.0.0.1:8080), PORTCULLIS_REPLICAS
// (instances per service, e.g. identitysvc=2,authzsvc=2) and
// PORTCULLIS_RUN_DIR (where start keeps its pid and log, default .run).
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"portcullis.dev/e2e/platform"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: platform up|start|stop")
		os.Exit(2)
	}
	runDir := runDir()
	var err error
	switch os.Args[1] {
	case "up":
		err = up()
	case "start":
		err = start(runDir)
	case "stop":
		err = stop(runDir)
	default:
		err = fmt.Errorf("unknown command %q (want up, start or stop)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "platform:", err)
		os.Exit(1)
	}
}

// runDir holds the platform's pid, log and generated secrets.
func runDir() string { return cmp.Or(os.Getenv("PORTCULLIS_RUN_DIR"), ".run") }

func options() platform.Options {
	return platform.Options{
		ConsulAddr:  os.Getenv("PORTCULLIS_CONSUL_ADDR"),
		GatewayAddr: os.Getenv("PORTCULLIS_GATEWAY_ADDR"),
		DatabaseURL: os.Getenv("PORTCULLIS_DATABASE_URL"),
		Log:         os.Stdout,
		Colour:      term.IsTerminal(int(os.Stdout.Fd())),
		Progress:    os.Stdout,
		StateDir:    runDir(),
		Replicas:    replicas(os.Getenv("PORTCULLIS_REPLICAS")),
	}
}

// replicas reads PORTCULLIS_REPLICAS, e.g. "identitysvc=2,authsvc=2";
// a malformed entry is ignored with a warning.
func replicas(spec string) map[string]int {
	n := map[string]int{}
	for entry := range strings.SplitSeq(spec, ",") {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		name, count, ok := strings.Cut(strings.TrimSpace(entry), "=")
		c, err := strconv.Atoi(count)
		if !ok || err != nil || c < 1 || !slices.Contains(platform.Services, name) || name == "gateway" {
			fmt.Fprintf(os.Stderr, "platform: ignoring PORTCULLIS_REPLICAS entry %q (want service=count, e.g. identitysvc=2)\n", entry)
			continue
		}
		n[name] = c
	}
	return n
}

// up runs the platform until SIGINT or SIGTERM, or until a process fails.
func up() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := platform.Start(ctx, options())
	if err != nil {
		return err
	}
	printWelcome(os.Stdout, p)
	if ready := os.Getenv(readyFileEnv); ready != "" {
		if err := os.WriteFile(ready, []byte(p.GatewayURL+"\n"), 0o644); err != nil {
			return errors.Join(fmt.Errorf("write ready file: %w", err), shutdown(p))
		}
	}
	waitErr := p.Wait(ctx)
	fmt.Println("stopping…")
	return errors.Join(waitErr, shutdown(p))
}

func shutdown(p *platform.Platform) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p.Stop(ctx)
}

// printWelcome tells a newcomer where everything is and what to try.
func printWelcome(w io.Writer, p *platform.Platform) {
	password := "(in .run/secrets.env as PORTCULLIS_ADMIN_PASSWORD)"
	switch {
	case os.Getenv("PORTCULLIS_ADMIN_PASSWORD") != "":
		password = "(from PORTCULLIS_ADMIN_PASSWORD)"
	case p.Admin.PasswordIsNew:
		password = p.Admin.Password + "   <- generated now and shown once; also kept in .run/secrets.env"
	}
	fmt.Fprintf(w, "\nPortcullis is up.\n  gateway     %s\n  consul UI   http://%s/ui/\n  admin       %s\n  password    %s\n\n",
		p.GatewayURL, p.ConsulAddr, p.Admin.Email, password)
	fmt.Fprintln(w, "Try it from the repository root (Connect JSON over plain HTTP, then gRPC with buf curl):")
	fmt.Fprintln(w, "  export PASSWORD='...'   # the admin password above")
	for _, cmd := range platform.TryCommands(p.GatewayURL, p.Admin.Email) {
		fmt.Fprintln(w, "  "+cmd)
	}
	fmt.Fprintln(w, "\nPress Ctrl-C to stop.")
}
