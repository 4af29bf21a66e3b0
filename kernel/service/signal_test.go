package service_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/service"
)

// TestSignalContextSecondSignalEnds runs a process that drains for a minute
// once signalled: a second SIGTERM ends it at once.
func TestSignalContextSecondSignalEnds(t *testing.T) {
	if os.Getenv("SIGNAL_CONTEXT_CHILD") == "1" {
		ctx, stop := service.SignalContext(context.Background())
		defer stop()
		fmt.Println("ready")
		<-ctx.Done()
		fmt.Println("draining")
		time.Sleep(time.Minute)
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSignalContextSecondSignalEnds$")
	cmd.Env = append(os.Environ(), "SIGNAL_CONTEXT_CHILD=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := bufio.NewScanner(out)
	next := func() string {
		for lines.Scan() {
			if l := lines.Text(); l == "ready" || l == "draining" {
				return l
			}
		}
		return ""
	}
	require.Equal(t, "ready", next())
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, "draining", next(), "the first signal did not start the drain")
	time.Sleep(50 * time.Millisecond) // the context's watcher gives the signal back
	start := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	err = cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the process went on draining")
	assert.Less(t, time.Since(start), 10*time.Second)
	status := exit.Sys().(syscall.WaitStatus)
	assert.True(t, status.Signaled() && status.Signal() == syscall.SIGTERM, "ended by %v", status)
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	stopped, stop := context.WithCancel(context.Background())
	stop()
	running := context.Background()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want int
	}{
		{"stopped while waiting for the database", stopped, fmt.Errorf("connect: stopped after 3 attempts: %w", errors.Join(errors.New("connection refused"), context.Canceled)), 0},
		{"a failed drain after the stop", stopped, errors.New("shutdown: 2 requests still in flight"), 1},
		{"a failure with no stop asked for", running, fmt.Errorf("open: %w", context.Canceled), 1},
		{"a bad configuration", running, errors.New("config: database.dsn: a value is required"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, service.ExitCode(tt.ctx, tt.err))
		})
	}
}
