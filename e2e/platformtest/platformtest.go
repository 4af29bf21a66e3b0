// Package platformtest starts the real platform for a test: the binaries
// built from this workspace, a Consul agent and a database of the test's
// own, all stopped and removed when the test ends.
package platformtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"portcullis.dev/e2e/platform"
	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/kerneltest/freeport"
)

// Build builds every service binary and the platform launcher
// (`platform`, what `go tool task up/start/stop` run) into a bin directory
// beside the consul binary, as `go tool task build` does into bin/. It
// builds once per test binary, however many tests ask; [Main] removes the
// directory when the tests are done.
func Build(t testing.TB) string {
	t.Helper()
	consul := kerneltest.ConsulBinary(t)
	built.once.Do(func() { built.dir, built.err = build(consul) })
	require.NoError(t, built.err)
	return built.dir
}

// built is what Build made: shared by the tests of one test binary.
var built struct {
	once sync.Once
	dir  string
	err  error
}

func build(consul string) (string, error) {
	bin, err := os.MkdirTemp("", "portcullis-e2e-bin-")
	if err != nil {
		return "", err
	}
	args := []string{"build", "-o", bin}
	for _, name := range platform.Services {
		args = append(args, "portcullis.dev/"+name+"/cmd/"+name)
	}
	args = append(args, "portcullis.dev/e2e/cmd/platform")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return bin, fmt.Errorf("go build: %w: %s", err, out)
	}
	return bin, os.Symlink(consul, filepath.Join(bin, "consul"))
}

// Main runs the tests of a package that uses [Build] and removes what
// Build made; call it from TestMain: os.Exit(platformtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	return code
}

// Database returns the URL of a database of the test's own on the test
// PostgreSQL, dropped (with its service roles) when the test ends.
func Database(t testing.TB) string {
	t.Helper()
	base, _ := kerneltest.Postgres(t)
	u, err := url.Parse(base)
	require.NoError(t, err)
	u.Path = "/e2e_" + strings.ToLower(rand.Text()[:12])
	t.Cleanup(func() { _ = platform.DropDatabase(context.Background(), u.String()) })
	return u.String()
}

// FreeAddr returns a loopback address nothing listens on right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	require.NoError(t, err)
	return addr
}

// FastHashing makes password hashing cheap, for tests that create many
// users; production keeps OWASP's parameters.
var FastHashing = []string{
	"PORTCULLIS_IDENTITY_ARGON2_MEMORY_KIB=8192",
	"PORTCULLIS_IDENTITY_ARGON2_ITERATIONS=1",
}

// Start builds and starts the platform on free ports with opts (BinDir,
// DatabaseURL, ConsulAddr and GatewayAddr are filled in when zero) and
// stops it when the test ends. Its logs go to the returned buffer.
func Start(t testing.TB, opts platform.Options) (*platform.Platform, *kerneltest.Buffer) {
	t.Helper()
	if opts.BinDir == "" {
		opts.BinDir = Build(t)
	}
	if opts.DatabaseURL == "" {
		opts.DatabaseURL = Database(t)
	}
	if opts.ConsulAddr == "" {
		// kerneltest's agent picks ports free for TCP and UDP and retries,
		// so platforms in parallel tests never collide.
		opts.ConsulAddr = kerneltest.StartConsul(t).Addr()
	}
	if opts.GatewayAddr == "" {
		opts.GatewayAddr = FreeAddr(t)
	}
	// Mail (verification links) goes to a folder of the test's own.
	opts.Env = append([]string{"PORTCULLIS_MAIL_DIR=" + t.TempDir()}, opts.Env...)
	logs := &kerneltest.Buffer{}
	opts.Log = logs
	p, err := platform.Start(t.Context(), opts)
	require.NoError(t, err, "logs:\n%s", logs.String())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("stop the platform: %v\nlogs:\n%s", err, logs.String())
		}
	})
	return p, logs
}
