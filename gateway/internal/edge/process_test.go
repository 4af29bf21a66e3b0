package edge_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Processes the benchmark runs beside itself, and what they cost.

// freeAddr returns a loopback address with a free port for a process to
// listen on. Another process could take the port before it binds it, which
// fails that start rather than measuring the wrong server.
func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// startProcess starts cmd, waits until ready reports true, and stops it
// (SIGTERM, then SIGKILL after 5s) when the test ends, printing its output
// and what logs returns if the test failed. It returns the process ID.
func startProcess(t testing.TB, name string, cmd *exec.Cmd, logs func() string, ready func() bool) int {
	t.Helper()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s\n%s", name, out.String(), logs())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !ready() {
		select {
		case <-exited:
			t.Fatalf("%s exited: %v\n%s", name, waitErr, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not ready after 15s", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cmd.Process.Pid
}

// startGatewayProcess runs the gateway's own binary (cmd/gateway, built
// here) as a process of its own, as it is deployed and as nginx runs,
// configured like e.config: this env's Consul, the stand-in Auth service's
// tokens, no rate limits, errors only in its log. It returns its base URL
// and process ID once it is ready.
func (e *env) startGatewayProcess(t testing.TB) (string, int) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gateway")
	build := exec.Command("go", "build", "-o", bin, "portcullis.dev/gateway/cmd/gateway")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	cfg := e.config(t)
	addr := freeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"PORTCULLIS_GATEWAY_ADDR="+addr,
		"PORTCULLIS_REGISTRY_ADDR="+cfg.Registry.Addr,
		"PORTCULLIS_TOKENS_JWKS_URL="+cfg.Tokens.JWKSURL,
		"PORTCULLIS_TOKENS_ISSUER="+cfg.Tokens.Issuer,
		"PORTCULLIS_TOKENS_AUDIENCE="+cfg.Tokens.Audience,
		"PORTCULLIS_RATELIMIT_ENABLED=false",
		"PORTCULLIS_LOGGING_LEVEL=error",
	)
	pid := startProcess(t, "gateway", cmd, func() string { return "" }, func() bool {
		res, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		_ = res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
	return "http://" + addr, pid
}

// listening returns a readiness check for startProcess: something
// accepts connections on addr.
func listening(addr string) func() bool {
	return func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}
}

// processCPU returns the user and system CPU time so far of this process
// and of the processes pids.
func processCPU(pids ...int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	total := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, pid := range pids {
		fields, err := procStat(pid)
		if err != nil || len(fields) < 13 {
			continue
		}
		// Fields 14 and 15 of the file, utime and stime.
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		total += time.Duration(utime+stime) * time.Second / clockTicks
	}
	return total
}

// procStat returns the fields of /proc/<pid>/stat that follow the command
// name, which may hold spaces but ends with the last ')': the state first,
// then the parent's process ID.
func procStat(pid int) ([]string, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])), nil
}

// clockTicks is the unit of /proc/<pid>/stat times, USER_HZ, which Linux
// fixes at 100 on the platforms Go supports.
const clockTicks = 100

// goStats is what a Go process's own metrics say of its memory: bytes
// allocated since it started, and collections.
type goStats struct{ allocated, collections float64 }

// readGoStats reads goStats from the Prometheus metrics a process serves
// at metricsURL.
func readGoStats(t testing.TB, metricsURL string) goStats {
	t.Helper()
	res, err := http.Get(metricsURL)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	var s goStats
	found := 0
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *float64
		switch name {
		case "go_memstats_alloc_bytes_total":
			dst = &s.allocated
		case "go_gc_duration_seconds_count":
			dst = &s.collections
		default:
			continue
		}
		*dst, err = strconv.ParseFloat(value, 64)
		require.NoError(t, err, "%s", sc.Text())
		found++
	}
	require.NoError(t, sc.Err())
	require.Equal(t, 2, found, "the Go metrics are missing from %s", metricsURL)
	return s
}
