package rpc_test

import (
	"io"
	"log/slog"
	"net/http"

	"github.com/hashicorp/consul/api"

	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/logging"
)

type syncBuffer = kerneltest.Buffer

func jsonLogger(w io.Writer) *slog.Logger {
	return logging.New(logging.Config{Level: "debug", Format: logging.FormatJSON}, logging.WithOutput(w))
}

// newH2CClient speaks HTTP/2 with prior knowledge, like the services do.
func newH2CClient() *http.Client {
	t := &http.Transport{Protocols: new(http.Protocols)}
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t}
}

// agentRegistration registers a passing instance of service on port
// without a health endpoint behind it (a TTL check set to passing).
func agentRegistration(service string, port int) *api.AgentServiceRegistration {
	return &api.AgentServiceRegistration{
		ID: service + "-1", Name: service, Address: "127.0.0.1", Port: port,
		Check: &api.AgentServiceCheck{TTL: "1h", Status: api.HealthPassing},
	}
}
