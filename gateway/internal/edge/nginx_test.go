package edge_test

import (
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

// nginxConf is a minimal nginx that takes h2c with prior knowledge and
// passes every request to one upstream over h2c, as the gateway does.
//
// grpc_pass is nginx's only way to speak HTTP/2 to an upstream; it does
// not look at the content type, so a Connect unary call (application/proto,
// trailers as Trailer- headers) passes as well as gRPC does.
//
// One worker: nginx's event loop serves one client connection from one
// worker whatever worker_processes says, and the benchmark's client opens
// one HTTP/2 connection per host, as the gateway's does. master_process
// off keeps that worker in the process the test starts and stops, so
// nothing outlives the test; it serves requests exactly as a worker under
// a master would.
//
// Keepalive to the upstream: nginx's gRPC proxy sends one request per
// upstream connection at a time, so it keeps up to 64 of them idle for
// reuse. keepalive_requests is raised on both sides so that neither the
// client's connection nor the upstream ones are closed every 1000 requests
// (the default), which would measure reconnects, not proxying.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;

events {
	worker_connections 1024;
}

http {
	access_log off;
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;

	keepalive_requests 1000000;
	keepalive_timeout 120s;

	upstream identity {
		server %[3]s;
		keepalive 64;
		keepalive_requests 1000000;
		keepalive_timeout 120s;
	}

	server {
		listen %[2]s http2;
		location / {
			grpc_pass grpc://identity;
		}
	}
}
`

// nginxBinary returns the path of nginx, or "" when it is not installed.
func nginxBinary() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

// startNginx runs nginx proxying h2c to upstream (host:port) until the test
// ends and returns its base URL and process ID, or "" after logging why
// when nginx is not installed.
func startNginx(t testing.TB, upstream string) (string, int) {
	t.Helper()
	bin := nginxBinary()
	if bin == "" {
		t.Log("nginx is not installed (apt-get install nginx): no nginx figures")
		return "", 0
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	conf := filepath.Join(dir, "nginx.conf")
	require.NoError(t, os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, addr, upstream), 0o600))
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	pid := startProcess(t, "nginx", cmd, func() string {
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return "error log:\n" + string(log)
	}, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	return "http://" + addr, pid
}

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

// processCPU returns the user and system CPU time so far of this process
// and of the processes pids.
func processCPU(pids ...int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	total := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields 14 and 15, utime and stime, counted after the command
		// name, which may hold spaces but ends with the last ')'.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		total += time.Duration(utime+stime) * time.Second / clockTicks
	}
	return total
}

// clockTicks is the unit of /proc/<pid>/stat times, USER_HZ, which Linux
// fixes at 100 on the platforms Go supports.
const clockTicks = 100
