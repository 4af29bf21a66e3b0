package platform

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/config"
	"portcullis.dev/kernel/kerneltest/freeport"
)

// Services are the platform's binaries in start order: the gateway last, so
// it finds the services already registered.
var Services = []string{"identitysvc", "authsvc", "authzsvc", "auditsvc", "gateway"}

// DefaultDatabaseURL is the local PostgreSQL a fresh machine has.
const DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/portcullis?sslmode=disable"

// Options says where the binaries are and how the platform is reached. The
// zero value runs the binaries in ./bin with a new Consul dev agent on its
// usual port 8500 and the gateway on 127.0.0.1:8080.
type Options struct {
	// BinDir holds consul and the service binaries. Empty means "bin".
	BinDir string
	// ConsulAddr is the HTTP address of an existing Consul agent. Empty
	// means start `consul agent -dev` from BinDir.
	ConsulAddr string
	// ConsulHTTPPort is the port of the dev agent's HTTP API and UI. Zero
	// means 8500; -1 means any free port (tests).
	ConsulHTTPPort int
	// GatewayAddr is where the gateway listens. Empty means 127.0.0.1:8080.
	GatewayAddr string
	// DatabaseURL is the PostgreSQL the services use. Empty means
	// [DefaultDatabaseURL].
	DatabaseURL string
	// Log receives every process's output, one prefixed line at a time.
	// Nil discards.
	Log io.Writer
	// Colour prefixes log lines with ANSI colours.
	Colour bool
	// Progress receives one line per component as it becomes healthy. Nil
	// discards.
	Progress io.Writer
	// ReadyTimeout bounds the wait for every component. Zero means 60s.
	ReadyTimeout time.Duration
	// SharedRole runs every service as the role of DatabaseURL instead of a
	// role of its own that can touch only its schema (the default).
	SharedRole bool
	// Env is added to every service's environment, e.g. cheaper password
	// hashing for tests: PORTCULLIS_IDENTITY_ARGON2_ITERATIONS=1.
	Env []string
	// StateDir keeps what must survive a restart, such as the generated
	// secrets. Empty means nothing is kept: every Start is a new platform.
	StateDir string
	// Replicas is how many instances of a service to run, by service name;
	// a service not named runs one. The second instance of identitysvc is
	// the process "identitysvc-2", and so on.
	Replicas map[string]int
}

// Platform is a running set of processes. Stop it with [Platform.Stop].
type Platform struct {
	// ConsulAddr is the HTTP address of the Consul agent in use.
	ConsulAddr string
	// GatewayURL is the base URL of the gateway, e.g. http://127.0.0.1:8080.
	GatewayURL string
	// Admin is the bootstrap administrator.
	Admin Admin
	// SecretsFile is the file the generated secrets, the admin's password
	// among them unless it came from the environment, are kept in: ""
	// when [Options.StateDir] is empty and nothing is kept.
	SecretsFile string

	procs      []*process
	serviceKey string
	exited     chan *process
	progress   io.Writer
	log        *prefixLog
	bin        string
	envs       map[string][]string // each process's environment, to restart it
	replicas   map[string]int
	mu         sync.Mutex
	stopped    map[*process]bool // stopped on purpose: not a failure
	freePorts  func(n int) ([]int, error)
}

// Start starts Consul (unless [Options.ConsulAddr] names one), every service
// and the gateway, and returns once all of them are healthy. If any fails to
// start or become healthy, Start stops the others and returns an error that
// carries the failing process's last log lines.
func Start(ctx context.Context, opts Options) (*Platform, error) {
	bin := cmp.Or(opts.BinDir, "bin")
	gatewayAddr := cmp.Or(opts.GatewayAddr, "127.0.0.1:8080")
	dbURL := cmp.Or(opts.DatabaseURL, DefaultDatabaseURL)
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	p := &Platform{
		GatewayURL: "http://" + gatewayAddr,
		exited:     make(chan *process, 4*(len(Services)+1)),
		progress:   cmp.Or[io.Writer](opts.Progress, io.Discard),
		bin:        bin,
		envs:       map[string][]string{},
		stopped:    map[*process]bool{},
		replicas:   map[string]int{},
		freePorts:  freeport.Pick,
	}
	names := []string{"consul"}
	for _, name := range Services {
		p.replicas[name] = max(1, opts.Replicas[name])
		names = append(names, p.instanceNames(name)...)
	}
	log := newPrefixLog(logw, opts.Colour, names...)
	p.log = log
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(opts.ReadyTimeout, 60*time.Second))
	defer cancel()

	fail := func(err error) (*Platform, error) {
		stopCtx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_ = p.Stop(stopCtx)
		return nil, err
	}

	// A fixed port someone holds, most often a platform left running,
	// would be answered by that one's processes: checked first.
	if err := portFree(gatewayAddr, "PORTCULLIS_GATEWAY_ADDR"); err != nil {
		return nil, &StartError{Name: "gateway", Err: err}
	}
	if opts.ConsulAddr == "" && opts.ConsulHTTPPort >= 0 {
		consulAddr := "127.0.0.1:" + strconv.Itoa(cmp.Or(opts.ConsulHTTPPort, 8500))
		if err := portFree(consulAddr, "PORTCULLIS_CONSUL_HTTP_PORT (or PORTCULLIS_CONSUL_ADDR to use that agent)"); err != nil {
			return nil, &StartError{Name: "consul", Err: err}
		}
	}
	if err := EnsureDatabase(ctx, dbURL); err != nil {
		return nil, &StartError{Name: "postgres", Err: err}
	}
	fmt.Fprintf(p.progress, "✓ %-12s database ready\n", "postgres")

	p.ConsulAddr = opts.ConsulAddr
	if p.ConsulAddr == "" {
		addr, err := p.startConsul(ctx, bin, opts.ConsulHTTPPort, log)
		if err != nil {
			return fail(err)
		}
		p.ConsulAddr = addr
	} else if err := p.await(ctx, "consul", func(ctx context.Context) error { return consulLeader(ctx, p.ConsulAddr) }); err != nil {
		return fail(err)
	}

	if err := keysNeedTheirKEK(ctx, dbURL, opts.StateDir); err != nil {
		return fail(&StartError{Name: "postgres", Err: err})
	}
	secret, fresh, err := secrets(opts.StateDir)
	if err != nil {
		return fail(fmt.Errorf("platform secrets: %w", err))
	}
	p.Admin = Admin{
		Email:         cmp.Or(os.Getenv("PORTCULLIS_ADMIN_EMAIL"), DefaultAdminEmail),
		Password:      secret[adminPasswordVar],
		PasswordIsNew: fresh[adminPasswordVar],
	}
	p.SecretsFile = secretsFile(opts.StateDir)
	p.serviceKey = secret["PORTCULLIS_SERVICE_AUTH_SERVICE_KEY"]
	dsns := map[string]string{}
	if !opts.SharedRole {
		if dsns, err = serviceDSNs(ctx, dbURL, secret); err != nil {
			return fail(&StartError{Name: "postgres", Err: fmt.Errorf("service roles: %w", err)})
		}
	}
	for _, name := range Services {
		// The platform's own secrets stay with it: a service gets only
		// what it needs, below.
		env := append(childEnviron(),
			"PORTCULLIS_REGISTRY_ADDR="+p.ConsulAddr,
			"PORTCULLIS_DATABASE_DSN="+cmp.Or(dsns[name], dbURL),
			"PORTCULLIS_REGISTRY_CHECK_INTERVAL=1s", // healthy sooner on a laptop
		)
		for _, s := range serviceSecrets[name] {
			env = append(env, s+"="+secret[s])
		}
		if name == "gateway" {
			env = append(env, "PORTCULLIS_GATEWAY_ADDR="+gatewayAddr,
				// Browser clients on a developer's machine (connect-web, gRPC-Web).
				"PORTCULLIS_CORS_ALLOWED_ORIGINS=http://localhost:*,http://127.0.0.1:*")
		}
		if name == "authzsvc" {
			env = append(env, "PORTCULLIS_RBAC_BOOTSTRAP_ADMINS="+p.Admin.UserID)
		}
		if _, set := os.LookupEnv("PORTCULLIS_IDENTITY_PUBLIC_URL"); name == "identitysvc" && !set {
			// The mails' links point at this platform's gateway, wherever
			// PORTCULLIS_GATEWAY_ADDR put it.
			env = append(env, "PORTCULLIS_IDENTITY_PUBLIC_URL="+p.GatewayURL+"/verify")
		}
		env = append(env, opts.Env...)
		for _, proc := range p.instanceNames(name) {
			p.envs[proc] = env
			if err := p.spawn(proc, filepath.Join(bin, name), nil, env, syscall.SIGTERM, log); err != nil {
				return fail(err)
			}
		}
		if name != "identitysvc" {
			continue
		}
		// The admin must exist before Authz starts, which binds it.
		if err := p.await(ctx, name, p.healthCheck(name, 1)); err != nil {
			return fail(err)
		}
		addrs, err := p.Instances(ctx, name)
		if err != nil || len(addrs) == 0 {
			return fail(&StartError{Name: "admin", Err: fmt.Errorf("find identitysvc: %v", err)})
		}
		if err := ensureAdmin(ctx, "http://"+addrs[0], &p.Admin, p.SecretsFile, p.ServiceToken); err != nil {
			return fail(&StartError{Name: "admin", Err: err})
		}
		fmt.Fprintf(p.progress, "✓ %-12s %s (user %s)\n", "admin", p.Admin.Email, p.Admin.UserID)
	}
	for _, name := range Services {
		if name != "identitysvc" {
			if err := p.await(ctx, name, p.healthCheck(name, p.replicas[name])); err != nil {
				return fail(err)
			}
			continue
		}
		// Its first instance was awaited for the admin: await the others
		// one by one, so each process gets one progress line.
		for i, proc := range p.instanceNames(name)[1:] {
			if err := p.await(ctx, proc, p.healthCheck(name, i+2)); err != nil {
				return fail(err)
			}
		}
	}
	return p, nil
}

// instanceNames are the process names of service's instances: the service
// name for the first, then name-2, name-3...
func (p *Platform) instanceNames(service string) []string {
	names := []string{service}
	for i := 2; i <= p.replicas[service]; i++ {
		names = append(names, service+"-"+strconv.Itoa(i))
	}
	return names
}

// serviceOf is the service a process is an instance of.
func serviceOf(proc string) string {
	if i := strings.LastIndexByte(proc, '-'); i > 0 {
		if _, err := strconv.Atoi(proc[i+1:]); err == nil {
			return proc[:i]
		}
	}
	return proc
}

// healthCheck passes once want instances of the service are healthy.
func (p *Platform) healthCheck(service string, want int) func(context.Context) error {
	if service == "gateway" {
		return httpOK(p.GatewayURL + "/healthz")
	}
	return p.passingInConsul(service, want)
}

// ServiceToken returns a token that the platform's services accept from a
// fellow service calling audience (a service name), for tools that call
// internal procedures, such as the benchmark.
func (p *Platform) ServiceToken(audience string) (string, error) {
	tokens, err := authn.NewServiceTokenSource("platform", authn.ServiceConfig{ServiceKey: config.Secret(p.serviceKey)})
	if err != nil {
		return "", err
	}
	return tokens.Token(audience)
}

// PIDs returns the process ID of every running process by name, Consul
// included when the platform started it.
func (p *Platform) PIDs() map[string]int {
	pids := map[string]int{}
	for _, proc := range p.procs {
		if !proc.exited() {
			pids[proc.name] = proc.cmd.Process.Pid
		}
	}
	return pids
}

// StopService stops one process — a service, or one instance of it such as
// "identitysvc-2" — with SIGTERM, as an operator would, leaving the rest
// running. [Platform.Wait] does not count it as a failure.
func (p *Platform) StopService(ctx context.Context, name string) error {
	return p.halt(ctx, name, (*process).stop)
}

// KillService kills one process with SIGKILL, as a crash would: it cannot
// deregister or drain.
func (p *Platform) KillService(ctx context.Context, name string) error {
	return p.halt(ctx, name, (*process).kill)
}

func (p *Platform) halt(ctx context.Context, name string, how func(*process, context.Context) error) error {
	proc := p.proc(name)
	if proc == nil {
		return fmt.Errorf("no process %q", name)
	}
	p.mu.Lock()
	p.stopped[proc] = true
	p.mu.Unlock()
	return how(proc, ctx)
}

// StartService starts a process stopped with [Platform.StopService] or
// [Platform.KillService] again, with the same environment, and waits until
// every instance of its service is healthy.
func (p *Platform) StartService(ctx context.Context, name string) error {
	env, ok := p.envs[name]
	if !ok {
		return fmt.Errorf("no process %q", name)
	}
	if proc := p.proc(name); proc != nil && !proc.exited() {
		return fmt.Errorf("%s is running", name)
	}
	p.procs = slices.DeleteFunc(p.procs, func(pr *process) bool { return pr.name == name })
	service := serviceOf(name)
	if err := p.spawn(name, filepath.Join(p.bin, service), nil, env, syscall.SIGTERM, p.log); err != nil {
		return err
	}
	return p.await(ctx, name, p.healthCheck(service, p.replicas[service]))
}

// consulStartAttempts is how often [Platform.startConsul] tries fresh ports.
const consulStartAttempts = 3

// startConsul starts a dev agent and waits until it has a leader. Its ports
// were free when chosen, but another process may bind one before the agent
// does; the agent then exits, and it is started again on other ports.
func (p *Platform) startConsul(ctx context.Context, bin string, httpPort int, log *prefixLog) (string, error) {
	for attempt := 1; ; attempt++ {
		addr, err := p.spawnConsul(bin, httpPort, log)
		if err != nil {
			return "", err
		}
		err = p.await(ctx, "consul", func(ctx context.Context) error { return consulLeader(ctx, addr) })
		if err == nil {
			return addr, nil
		}
		proc := p.proc("consul")
		if attempt == consulStartAttempts || !proc.exited() || !lostPort(proc.lastLines()) {
			return "", err
		}
		p.mu.Lock()
		p.stopped[proc] = true // not a failure for Wait
		p.mu.Unlock()
		p.procs = slices.DeleteFunc(p.procs, func(pr *process) bool { return pr == proc })
		fmt.Fprintf(p.progress, "… %-12s lost a port to another process; trying others\n", "consul")
	}
}

// lostPort reports whether an agent's last lines say it could not bind a port.
func lostPort(lines []string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "address already in use") })
}

func (p *Platform) spawnConsul(bin string, httpPort int, log *prefixLog) (string, error) {
	ports, err := p.freePorts(5)
	if err != nil {
		return "", err
	}
	switch httpPort {
	case 0:
		httpPort = 8500
	case -1:
		httpPort = ports[0]
	}
	args := []string{
		"agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1", "-log-level=warn",
		"-http-port=" + strconv.Itoa(httpPort),
		"-grpc-port=" + strconv.Itoa(ports[1]),
		"-dns-port=-1",
		"-grpc-tls-port=-1", // else 8503, which a second platform (or the bench) would find taken
		"-serf-lan-port=" + strconv.Itoa(ports[2]),
		"-serf-wan-port=" + strconv.Itoa(ports[3]),
		"-server-port=" + strconv.Itoa(ports[4]),
	}
	if err := p.spawn("consul", filepath.Join(bin, "consul"), args, childEnviron(), syscall.SIGINT, log); err != nil {
		return "", err
	}
	p.proc("consul").anyExitAfterStop = true
	p.proc("consul").quietAfterStop.Store(true)
	return "127.0.0.1:" + strconv.Itoa(httpPort), nil
}

func (p *Platform) spawn(name, path string, args, env []string, stopSignal syscall.Signal, log *prefixLog) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s: %w (build it with `go tool task build`)", name, err)
	}
	proc, err := startProcess(name, path, args, env, stopSignal, log)
	if err != nil {
		return err
	}
	p.procs = append(p.procs, proc)
	go func() {
		<-proc.done
		p.exited <- proc
	}()
	return nil
}

// await polls check until it succeeds, the process named name exits, or ctx ends.
func (p *Platform) await(ctx context.Context, name string, check func(context.Context) error) error {
	start := time.Now()
	proc := p.proc(name)
	var last error
	for {
		if proc != nil && proc.exited() {
			return &StartError{Name: name, Err: fmt.Errorf("exited: %w", cmp.Or(proc.exitErr(), errors.New("status 0"))), LastLines: proc.lastLines()}
		}
		checkCtx, cancel := context.WithTimeout(ctx, time.Second)
		last = check(checkCtx)
		cancel()
		if last == nil {
			fmt.Fprintf(p.progress, "✓ %-12s healthy after %s\n", name, time.Since(start).Round(10*time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			se := &StartError{Name: name, Err: fmt.Errorf("not healthy in time: %w", last)}
			if proc != nil {
				se.LastLines = proc.lastLines()
			}
			return se
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// passingInConsul is healthy once Consul reports want instances of service
// passing their health check.
func (p *Platform) passingInConsul(service string, want int) func(context.Context) error {
	return func(ctx context.Context) error {
		addrs, err := p.Instances(ctx, service)
		if err != nil {
			return err
		}
		if len(addrs) < want {
			return fmt.Errorf("%d of %d instances of %s passing in Consul", len(addrs), want, service)
		}
		return nil
	}
}

func (p *Platform) proc(name string) *process {
	i := slices.IndexFunc(p.procs, func(pr *process) bool { return pr.name == name })
	if i < 0 {
		return nil
	}
	return p.procs[i]
}

// Wait blocks until ctx ends or any process exits on its own; in the latter
// case it returns a [StartError] naming it with its last log lines.
func (p *Platform) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case proc := <-p.exited:
		p.mu.Lock()
		onPurpose := p.stopped[proc]
		p.mu.Unlock()
		if onPurpose {
			return p.Wait(ctx)
		}
		return &StartError{Name: proc.name, Err: fmt.Errorf("exited: %w", cmp.Or(proc.exitErr(), errors.New("status 0"))), LastLines: proc.lastLines()}
	}
}

// Stop stops every process in reverse start order — the gateway first, Consul
// last — each with SIGTERM, killing what has not stopped when ctx ends.
func (p *Platform) Stop(ctx context.Context) error {
	var errs []error
	for _, proc := range slices.Backward(p.procs) {
		if err := proc.stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StartError says which component failed and what it printed last.
type StartError struct {
	Name      string
	Err       error
	LastLines []string
}

func (e *StartError) Error() string {
	msg := e.Name + ": " + e.Err.Error()
	if len(e.LastLines) > 0 {
		msg += "\nlast lines of " + e.Name + ":\n  " + strings.Join(e.LastLines, "\n  ")
	}
	return msg
}

func (e *StartError) Unwrap() error { return e.Err }

func consulLeader(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/status/leader", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || len(strings.Trim(string(body), "\" \n")) == 0 {
		return fmt.Errorf("no leader yet (%s)", resp.Status)
	}
	return nil
}

func httpOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// H2CClient returns an HTTP client that speaks HTTP/2 without TLS (prior
// knowledge), as gRPC clients and the services do.
func H2CClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

// Instances returns the host:port of every passing instance of service.
func (p *Platform) Instances(ctx context.Context, service string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.ConsulAddr+"/v1/health/service/"+service+"?passing=true", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var entries []struct {
		Service struct {
			Address string
			Port    int
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		return nil, fmt.Errorf("read Consul health of %s: %w", service, err)
	}
	var addrs []string
	for _, e := range entries {
		addrs = append(addrs, net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port)))
	}
	return addrs, nil
}

// portFree reports, as an error that says what to do, whether addr is
// taken. setting names what chooses another address.
func portFree(addr, setting string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s is in use (a platform still running? `go tool task stop` stops one started in the background; or choose another with %s): %w", addr, setting, err)
	}
	return ln.Close()
}
