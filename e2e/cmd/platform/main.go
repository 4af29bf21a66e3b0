// Command platform runs the whole Portcullis platform locally. It backs the
// Taskfile's up, start and stop tasks:
//
//	platform up      run everything in the foreground; Ctrl-C stops it all
//	platform start   the same in the background; returns once healthy
//	platform stop    stop what start started
//
// Environment: PORTCULLIS_CONSUL_ADDR (use this Consul agent instead of a dev
// agent), PORTCULLIS_CONSUL_HTTP_PORT (the dev agent's HTTP port, default
// 8500), PORTCULLIS_DATABASE_URL (the PostgreSQL to use),
// PORTCULLIS_GATEWAY_ADDR (default 127.0.0.1:8080), PORTCULLIS_REPLICAS
// (instances per service, e.g. identitysvc=2,authzsvc=2) and
// PORTCULLIS_RUN_DIR (where start keeps its pid and log and every command
// its generated secrets, default .run).
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
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

func options() (platform.Options, error) {
	consulPort := 0 // Options' default: Consul's usual 8500
	if v := os.Getenv("PORTCULLIS_CONSUL_HTTP_PORT"); v != "" {
		port, err := strconv.Atoi(v)
		if err != nil || port < 1 || port > 65535 {
			return platform.Options{}, fmt.Errorf("PORTCULLIS_CONSUL_HTTP_PORT=%q: want a port number", v)
		}
		consulPort = port
	}
	return platform.Options{
		ConsulAddr:     os.Getenv("PORTCULLIS_CONSUL_ADDR"),
		ConsulHTTPPort: consulPort,
		GatewayAddr:    os.Getenv("PORTCULLIS_GATEWAY_ADDR"),
		DatabaseURL:    os.Getenv("PORTCULLIS_DATABASE_URL"),
		Log:            os.Stdout,
		Colour:         term.IsTerminal(int(os.Stdout.Fd())),
		Progress:       os.Stdout,
		StateDir:       runDir(),
		Replicas:       replicas(os.Getenv("PORTCULLIS_REPLICAS")),
	}, nil
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
	opts, err := options()
	if err != nil {
		return err
	}
	// SIGHUP too: a closed terminal would otherwise kill the launcher and
	// leave its children, each in a process group of its own, running.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	p, err := platform.Start(ctx, opts)
	if err != nil {
		return err
	}
	// start, which runs up in the background with this output in a log,
	// prints the welcome from the ready file: a password generated now
	// goes there, once, and not into the log.
	ready := os.Getenv(readyFileEnv)
	fmt.Print(welcome(p, ready == "") + "\nPress Ctrl-C to stop.\n")
	if ready != "" {
		if err := writeReadyFile(ready, welcome(p, true)); err != nil {
			return errors.Join(err, shutdown(p))
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

// welcome tells a newcomer where everything is and what to try: the
// gateway, the Consul UI, the admin's credentials and commands to paste,
// the first of which sets $PASSWORD for the others. Without reveal, a
// password generated now is not in it: it is for a log.
func welcome(p *platform.Platform, reveal bool) string {
	var password, export string
	switch {
	case os.Getenv("PORTCULLIS_ADMIN_PASSWORD") != "":
		password = "(from PORTCULLIS_ADMIN_PASSWORD)"
		export = `export PASSWORD="$PORTCULLIS_ADMIN_PASSWORD"`
	case p.SecretsFile == "" && !reveal:
		password = "(generated now and shown once, by start)"
		export = "export PASSWORD=..."
	case p.SecretsFile == "": // not kept anywhere: this is the only chance
		password = p.Admin.Password + "   <- generated now and shown once"
		export = "export PASSWORD=" + shellQuote(p.Admin.Password)
	default:
		password = "(in " + p.SecretsFile + " as PORTCULLIS_ADMIN_PASSWORD)"
		if p.Admin.PasswordIsNew && reveal {
			password = p.Admin.Password + "   <- generated now and shown once; also kept in " + p.SecretsFile
		} else if p.Admin.PasswordIsNew {
			password = "(generated now; in " + p.SecretsFile + " as PORTCULLIS_ADMIN_PASSWORD)"
		}
		// Read from the file rather than printed, so the commands can be
		// pasted from a shared screen or a log.
		export = "export PASSWORD=$(sed -n 's/^PORTCULLIS_ADMIN_PASSWORD=//p' " + shellQuote(p.SecretsFile) + ")"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nPortcullis is up.\n  gateway     %s\n  consul UI   http://%s/ui/\n  admin       %s\n  password    %s\n\n",
		p.GatewayURL, p.ConsulAddr, p.Admin.Email, password)
	b.WriteString("Try it from the repository root (Connect JSON over plain HTTP, then gRPC with buf curl):\n")
	for _, cmd := range append([]string{export}, platform.TryCommands(p.GatewayURL, p.Admin.Email)...) {
		b.WriteString("  " + cmd + "\n")
	}
	return b.String()
}

// shellQuote quotes s for a POSIX shell unless it is plainly safe.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./+=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
