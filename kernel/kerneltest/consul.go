package kerneltest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"portcullis.dev/kernel/kerneltest/freeport"
)

// consulStartTimeout bounds how long a dev agent may take to be ready. It
// usually takes half a second.
const consulStartTimeout = 30 * time.Second

// consulStartAttempts is how often [StartConsul] tries fresh ports when the
// agent exits during start-up: between choosing a free port and the agent
// binding it, a parallel test may have taken it.
const consulStartAttempts = 3

// Consul is a Consul dev agent (`consul agent -dev`) of one test, listening
// on loopback ports of its own. It holds its state in memory only: a
// [Consul.Restart] loses every registration. Create it with [StartConsul].
type Consul struct {
	t   testing.TB
	bin string

	mu     sync.Mutex
	ports  consulPorts
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited; nil when stopped
	out    *Buffer
}

// consulPorts are the ports one agent listens on. Only HTTP must stay the
// same across a restart: it is the address clients were given.
type consulPorts struct {
	http, grpc, serfLAN, serfWAN, server int
}

// StartConsul starts a Consul dev agent for t, waits until it is ready —
// it has elected itself leader and put its own node in the catalog,
// healthy — and stops it when t ends. Its output is logged if t fails. Each
// call starts an agent of its own, so parallel tests do not share state. A
// missing consul binary makes t [Unavailable].
//
// Consul checks a service's health every second at the most often, and a
// new agent may hold back changes of check status for up to three seconds
// while it first syncs with itself as server: a test waiting for an
// instance to turn healthy or critical should allow a few seconds.
func StartConsul(t testing.TB) *Consul {
	t.Helper()
	c := &Consul{t: t, bin: ConsulBinary(t), out: &Buffer{}}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			t.Logf("consul agent output:\n%s", c.out.String())
		}
	})
	var err error
	for range consulStartAttempts {
		var ports consulPorts
		if ports, err = freeConsulPorts(); err != nil {
			t.Fatalf("start consul: %v", err)
		}
		if err = c.start(ports); err == nil {
			return c
		}
	}
	t.Fatalf("start consul: %v", err)
	return nil
}

// Addr returns the host:port of the agent's HTTP API, the address to give
// Consul clients. It stays the same across [Consul.Restart].
func (c *Consul) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.ports.http))
}

// Stop stops the agent: an interrupt, then a kill if it has not exited
// within five seconds. Clients then get connection errors. Stopping a
// stopped agent does nothing.
func (c *Consul) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopLocked()
}

// Restart stops the agent and starts a new one on the same HTTP port, ready
// as from [StartConsul]. The new agent is empty: services must register
// again, and the indexes of blocking queries start over (they go
// backwards). Like t.Fatal, call it from the test's goroutine.
func (c *Consul) Restart() {
	c.t.Helper()
	c.mu.Lock()
	c.stopLocked()
	ports := c.ports
	c.mu.Unlock()
	// The other ports are chosen afresh: only the HTTP address is known to
	// clients, and a fresh choice avoids waiting for the old ones to free.
	var err error
	for range consulStartAttempts {
		var fresh consulPorts
		if fresh, err = freeConsulPorts(); err != nil {
			break
		}
		fresh.http = ports.http
		if err = c.start(fresh); err == nil {
			return
		}
	}
	c.t.Fatalf("restart consul: %v", err)
}

// start starts an agent on ports and waits until it is ready.
func (c *Consul) start(ports consulPorts) error {
	args := []string{
		"agent", "-dev",
		"-bind=127.0.0.1", "-client=127.0.0.1",
		"-log-level=warn",
		"-http-port=" + strconv.Itoa(ports.http),
		"-grpc-port=" + strconv.Itoa(ports.grpc),
		"-grpc-tls-port=-1",
		"-serf-lan-port=" + strconv.Itoa(ports.serfLAN),
		"-serf-wan-port=" + strconv.Itoa(ports.serfWAN),
		"-server-port=" + strconv.Itoa(ports.server),
		"-dns-port=-1",
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout = c.out
	cmd.Stderr = c.out
	fmt.Fprintf(c.out, "--- %s %v\n", c.bin, args)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", c.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	c.mu.Lock()
	c.ports, c.cmd, c.exited = ports, cmd, exited
	c.mu.Unlock()

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.http))
	if err := waitReady(addr, exited); err != nil {
		c.Stop()
		return fmt.Errorf("consul agent on %s: %w", addr, err)
	}
	return nil
}

func (c *Consul) stopLocked() {
	if c.exited == nil {
		return
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd, c.exited = nil, nil
}

// waitReady polls the agent until it names a leader and the leader has put
// the agent's node in the catalog, healthy — before that, a service
// registered on the agent is not healthy, however its own check goes. It
// gives up when the agent exits or after [consulStartTimeout].
func waitReady(addr string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), consulStartTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		var leader string
		err := getJSON(ctx, client, "http://"+addr+"/v1/status/leader", &leader)
		if err == nil && leader == "" {
			err = errors.New("no leader yet")
		}
		if err == nil {
			// The consul service lives on the agent's node; it passes
			// once the node's serfHealth check does.
			var healthy []json.RawMessage
			err = getJSON(ctx, client, "http://"+addr+"/v1/health/service/consul?passing=true", &healthy)
			if err == nil && len(healthy) == 0 {
				err = errors.New("the agent's node is not healthy in the catalog yet")
			}
		}
		if err == nil {
			return nil
		}
		lastErr = err
		select {
		case <-exited:
			return errors.New("exited during start-up")
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %v", consulStartTimeout, lastErr)
		case <-tick.C:
		}
	}
}

func getJSON(ctx context.Context, client *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// freeConsulPorts picks the agent's ports (see [freeport.Pick]).
func freeConsulPorts() (consulPorts, error) {
	ports, err := freeport.Pick(5)
	if err != nil {
		return consulPorts{}, err
	}
	return consulPorts{http: ports[0], grpc: ports[1], serfLAN: ports[2], serfWAN: ports[3], server: ports[4]}, nil
}
