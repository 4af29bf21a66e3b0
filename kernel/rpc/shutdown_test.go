package rpc_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// childEnv makes the test binary run a service instead of the tests, so a
// test can signal a real process.
const childEnv = "RPC_TEST_CHILD_CONSUL"

func TestMain(m *testing.M) {
	if addr := os.Getenv(childEnv); addr != "" {
		os.Exit(serveChild(addr))
	}
	os.Exit(m.Run())
}

// serveChild is main of a service: it runs until SIGTERM and exits 0 after
// a clean shutdown.
func serveChild(consulAddr string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := logging.New(logging.Config{Level: "info", Format: logging.FormatJSON})
	reg, err := registry.New(registry.Config{Addr: consulAddr, CheckInterval: time.Second}, registry.WithLogger(logger))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := rpc.NewServer("drainsvc", "test", rpc.Config{DeregisterDelay: 200 * time.Millisecond, ShutdownTimeout: 10 * time.Second},
		rpc.WithRegistry(reg), rpc.WithLogger(logger), rpc.WithAccessPolicy(&rpc.AccessPolicy{}),
		rpc.WithCloser(func(context.Context) error { logger.Info("closer ran"); return nil }))
	srv.Handle(identityv1connect.NewIdentityServiceHandler(&identityStub{}, srv.HandlerOptions()...))
	go func() {
		if addr, err := srv.Addr(ctx); err == nil {
			fmt.Printf("LISTENING %s\n", addr)
		}
	}()
	if err := srv.Run(ctx); err != nil {
		logger.Error("run", "err", err)
		return 1
	}
	return 0
}

func TestSIGTERMDrainsAndDeregisters(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	reg := newRegistry(t, consul)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+consul.Addr())
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	lines := bufio.NewScanner(stdout)
	require.True(t, lines.Scan(), "child printed nothing; stderr:\n%s", stderr.String())
	addr, ok := strings.CutPrefix(lines.Text(), "LISTENING ")
	require.True(t, ok, lines.Text())

	registered := func() int {
		entries, _, err := reg.Client().Catalog().Service("drainsvc", "", nil)
		require.NoError(t, err)
		return len(entries)
	}
	require.Eventually(t, func() bool { return registered() == 1 }, 5*time.Second, 20*time.Millisecond)

	client := identityv1connect.NewIdentityServiceClient(newH2CClient(), "http://"+addr)
	callErr := make(chan error, 1)
	go func() {
		_, err := client.CreateUser(context.Background(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "slow@example.com"}))
		callErr <- err
	}()
	time.Sleep(200 * time.Millisecond) // the call is in flight
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		require.NoError(t, err, "the service did not exit 0; stderr:\n%s", stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("the service did not exit; stderr:\n%s", stderr.String())
	}
	assert.NoError(t, <-callErr, "the in-flight call was cut off")
	assert.Zero(t, registered(), "still registered in Consul after exit")

	logs := stderr.String()
	deregistered := strings.Index(logs, "deregistered from Consul")
	stopped := strings.Index(logs, `"msg":"stopped"`)
	assert.True(t, deregistered >= 0 && stopped > deregistered, "expected deregistration before the drain finished:\n%s", logs)
	assert.Contains(t, logs, "closer ran")
}
