package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/e2e/platform"
	"portcullis.dev/e2e/platformtest"
)

// `go tool task start && go tool task stop` leaves no process behind
// (issue #11). The real launcher starts the platform in the background on
// free ports, with a Consul dev agent of its own, greets the user as `up`
// does, serves through the gateway, and stop ends every process it
// started; after a crash of the platform itself, stop still finds and ends
// what it left.
func TestStartThenStopLeavesNoProcessBehind(t *testing.T) {
	bin := platformtest.Build(t)
	root, err := filepath.Abs("../../..") // the repository root: bin/buf and the contracts
	require.NoError(t, err)
	// The launcher runs bin/<service> from its working directory, as from
	// the repository root.
	work := t.TempDir()
	require.NoError(t, os.Symlink(bin, filepath.Join(work, "bin")))
	runDir := filepath.Join(work, "run")
	gatewayAddr := platformtest.FreeAddr(t)
	_, consulPort, err := net.SplitHostPort(platformtest.FreeAddr(t))
	require.NoError(t, err)
	env := []string{
		"PORTCULLIS_RUN_DIR=" + runDir,
		"PORTCULLIS_GATEWAY_ADDR=" + gatewayAddr,
		"PORTCULLIS_CONSUL_HTTP_PORT=" + consulPort,
		"PORTCULLIS_DATABASE_URL=" + platformtest.Database(t),
	}
	// A developer's own PORTCULLIS_* settings (an admin password, an
	// existing Consul) must not change what is tested.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PORTCULLIS_") {
			env = append(env, kv)
		}
	}
	// Whatever happens to the test, nothing it started outlives it.
	t.Cleanup(func() {
		if pid, err := readPid(runDir); err == nil {
			_, _ = killSession(pid)
		}
	})
	run := func(t *testing.T, command string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "platform"), command)
		cmd.Dir, cmd.Env = work, env
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "platform %s:\n%s\nlog:\n%s", command, out, tail(filepath.Join(runDir, "platform.log"), 40))
		return string(out)
	}
	gatewayURL := "http://" + gatewayAddr
	// started checks that every process of the platform is up in the
	// platform's session and returns the platform's pid.
	started := func(t *testing.T) int {
		t.Helper()
		pid, err := readPid(runDir)
		require.NoError(t, err)
		procs, err := sessionProcesses(pid)
		require.NoError(t, err)
		// The platform, Consul, and each service and the gateway.
		assert.Len(t, procs, 2+len(platform.Services), "the platform's session: %v", procs)
		resp, err := http.Get(gatewayURL + "/healthz")
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		return pid
	}
	nothingLeft := func(t *testing.T, pid int) {
		t.Helper()
		left, err := sessionProcesses(pid)
		require.NoError(t, err)
		assert.Empty(t, left, "processes of the platform left behind")
		assert.False(t, alive(pid), "the platform itself is still there")
		_, err = http.Get(gatewayURL + "/healthz")
		assert.Error(t, err, "the gateway still answers")
		_, err = net.DialTimeout("tcp", "127.0.0.1:"+consulPort, time.Second)
		assert.Error(t, err, "Consul still answers")
	}

	t.Run("start then stop", func(t *testing.T) {
		out := run(t, "start")
		secretsFile := filepath.Join(runDir, "secrets.env")
		for _, want := range []string{
			"gateway     " + gatewayURL,
			"consul UI   http://127.0.0.1:" + consulPort + "/ui/",
			"admin       " + platform.DefaultAdminEmail,
			"<- generated now and shown once; also kept in " + secretsFile,
			"export PASSWORD=$(sed -n 's/^PORTCULLIS_ADMIN_PASSWORD=//p' " + secretsFile + ")",
			"Stop it with `go tool task stop`",
		} {
			assert.Contains(t, out, want)
		}
		for _, cmd := range platform.TryCommands(gatewayURL, platform.DefaultAdminEmail) {
			assert.Contains(t, out, "  "+cmd+"\n")
		}
		assert.NoFileExists(t, readyPath(runDir), "the welcome, with the password, is left behind")
		pid := started(t)
		runWelcomeCommands(t, root, out)

		assert.Contains(t, run(t, "stop"), "stopped")
		nothingLeft(t, pid)
	})

	t.Run("stop after the platform crashed", func(t *testing.T) {
		out := run(t, "start")
		// The second run keeps the first one's data and admin password.
		assert.Contains(t, out, "password    (in "+filepath.Join(runDir, "secrets.env")+" as PORTCULLIS_ADMIN_PASSWORD)")
		last, err := os.ReadFile(filepath.Join(runDir, "platform.log.1"))
		require.NoError(t, err, "the first run's log is gone")
		assert.Contains(t, string(last), "password    (generated now; in "+filepath.Join(runDir, "secrets.env"), "platform.log.1 is not the first run's log")
		secrets, err := os.ReadFile(filepath.Join(runDir, "secrets.env"))
		require.NoError(t, err)
		_, password, found := strings.Cut(string(secrets), "PORTCULLIS_ADMIN_PASSWORD=")
		password, _, _ = strings.Cut(password, "\n")
		require.True(t, found && password != "", "no password in secrets.env:\n%s", secrets)
		assert.NotContains(t, string(last), password, "the first run's log holds the admin password")
		pid := started(t)
		// Its children, each in a process group of its own, outlive it.
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		require.Eventually(t, func() bool { return !alive(pid) }, 10*time.Second, 50*time.Millisecond)
		left, err := sessionProcesses(pid)
		require.NoError(t, err)
		require.NotEmpty(t, left, "nothing outlived the platform: the test proves nothing")

		assert.Contains(t, run(t, "stop"), "killed the processes it left")
		nothingLeft(t, pid)
	})
}

// runWelcomeCommands runs the commands of the welcome in out, as a user
// pasting them at the repository root would.
func runWelcomeCommands(t *testing.T, root, out string) {
	t.Helper()
	_, block, ok := strings.Cut(out, "Try it from the repository root")
	require.True(t, ok, "no commands in the welcome:\n%s", out)
	block = block[strings.IndexByte(block, '\n')+1:]
	block, _, _ = strings.Cut(block, "\n\n")
	// flows.TestTheCommandsUpPrintsWork runs the same commands, buf curl
	// included; what is new here is the line that reads the password from
	// the platform's secrets, and the curl commands after it.
	block, _, _ = strings.Cut(block, "  bin/buf curl")
	cmd := exec.Command("bash", "-c", "set -euo pipefail\n"+block+"\n")
	cmd.Dir = root
	got, err := cmd.CombinedOutput()
	require.NoError(t, err, "script:\n%s\noutput:\n%s", block, got)
	// protojson varies its whitespace on purpose: compare without it.
	assert.Contains(t, strings.Join(strings.Fields(string(got)), ""), `"email":"`+platform.DefaultAdminEmail+`"`, "GetMe")
}
