package edge_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

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
// reuse. For the same reason it needs a connection, two descriptors, per
// call in flight: when a stall makes calls of the open loop pile up, 1024
// (the default) ran out and nginx closed client connections.
// keepalive_requests is raised on both sides so that neither the client's
// connection nor the upstream ones are closed every 1000 requests (the
// default), which would measure reconnects, not proxying.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;

worker_rlimit_nofile 16384;

events {
	worker_connections 8192;
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
	}, listening(addr))
	return "http://" + addr, pid
}
