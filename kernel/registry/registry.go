package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"portcullis.dev/kernel/logging"
)

// DefaultCheckPath is the path of the readiness endpoint Consul probes on
// each registered instance, unless [WithCheckPath] says otherwise.
const DefaultCheckPath = "/readyz"

// The metadata keys a registration sets from [Instance.Version] and
// [Instance.ConnectServices].
const (
	MetaVersion         = "version"
	MetaConnectServices = "connect_services"
)

// ErrUnreachable says the Consul agent did not answer, as opposed to
// answering with an error. [Registry.Register] wraps it, and returns the
// instance's ID with it: a service may serve anyway and leave the
// registration to [Registry.KeepRegistered], as it would after an agent
// restart, so that services can start before their agent.
var ErrUnreachable = errors.New("consul agent unreachable")

// agentAnswered reports whether err, from a call to the agent, is the
// agent's own answer (or no error), not a failure to reach it.
func agentAnswered(err error) bool {
	var status api.StatusError
	return err == nil || errors.As(err, &status)
}

// maxMetaValue is the longest metadata value Consul accepts.
const maxMetaValue = 512

// Registry registers a service's instances in Consul and creates the
// watchers that find other services' instances. It is safe for concurrent
// use. The zero value is not usable; call [New].
type Registry struct {
	client    *api.Client
	cfg       Config
	logger    *slog.Logger
	checkPath string
}

// Option configures a [Registry].
type Option func(*options)

type options struct {
	logger    *slog.Logger
	checkPath string
}

// WithLogger sets the logger for registrations and, unless they are given
// their own, the registry's watchers. Nil, the default, discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithCheckPath sets the path of the HTTP endpoint Consul probes on each
// instance [Registry.Register] registers. An instance passes while the
// endpoint answers 2xx. Empty, the default, means [DefaultCheckPath].
func WithCheckPath(path string) Option {
	return func(o *options) { o.checkPath = path }
}

// New returns a registry for the Consul agent cfg describes. It validates
// cfg but does not contact Consul: a service may start before its agent.
func New(cfg Config, opts ...Option) (*Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("registry config: %w", err)
	}
	cfg = cfg.withDefaults()
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.checkPath == "" {
		o.checkPath = DefaultCheckPath
	}
	if !strings.HasPrefix(o.checkPath, "/") {
		return nil, fmt.Errorf("registry check path %q: must start with /", o.checkPath)
	}
	client, err := api.NewClient(&api.Config{
		Address:    cfg.Addr,
		Token:      cfg.Token.Value(),
		Datacenter: cfg.Datacenter,
	})
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Addr, err)
	}
	return &Registry{
		client:    client,
		cfg:       cfg,
		logger:    logging.OrDiscard(o.logger),
		checkPath: o.checkPath,
	}, nil
}

// Client returns the Consul API client the registry uses, for what the
// registry does not cover (key/value reads, sessions, ...). It carries the
// configured address, token and datacenter.
func (r *Registry) Client() *api.Client { return r.client }

// agentID returns the node ID of the Consul agent answering, which a dev
// agent draws anew each start; watchers compare it to tell a restarted
// agent from instances that left.
func (r *Registry) agentID(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var self struct {
		Config struct{ NodeID string }
	}
	if _, err := r.client.Raw().Query("/v1/agent/self", &self, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return "", fmt.Errorf("consul agent self: %w", err)
	}
	return self.Config.NodeID, nil
}

// Register registers inst with the Consul agent and returns its ID: inst.ID,
// or, if that is empty, "<service>-<address>-<port>", which a restarted
// instance on the same address reuses, so it replaces its stale predecessor
// rather than joining it.
//
// The registration carries inst.Version and inst.ConnectServices in the
// metadata keys [MetaVersion] and [MetaConnectServices] (comma-separated),
// the Connect services again as tags (which the [CatalogWatcher] reads),
// inst.Meta, and an HTTP check of http://<address>:<port><check path> every
// [Config.CheckInterval]. The instance is critical, so not resolved, until
// its first check passes, which Consul runs within one interval.
// Registering an ID again replaces the registration.
//
// An agent that cannot be reached gives an error wrapping [ErrUnreachable],
// and the ID the instance would have had.
func (r *Registry) Register(ctx context.Context, inst Instance) (string, error) {
	return r.register(ctx, inst, "")
}

// register registers inst with its check starting in initialStatus; empty
// means Consul's default, critical.
func (r *Registry) register(ctx context.Context, inst Instance, initialStatus string) (string, error) {
	reg, err := r.registration(inst)
	if err != nil {
		return "", fmt.Errorf("register %s: %w", inst.Service, err)
	}
	reg.Check.Status = initialStatus
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := r.client.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		if !agentAnswered(err) && ctx.Err() == nil {
			return reg.ID, fmt.Errorf("register %q in Consul at %s: %w: %w", reg.ID, r.cfg.Addr, ErrUnreachable, err)
		}
		return "", fmt.Errorf("register %q in Consul at %s: %w", reg.ID, r.cfg.Addr, err)
	}
	r.logger.InfoContext(ctx, "registered in Consul",
		slog.String("id", reg.ID), slog.String("service", reg.Name), slog.String("check", reg.Check.HTTP))
	return reg.ID, nil
}

func (r *Registry) registration(inst Instance) (*api.AgentServiceRegistration, error) {
	switch {
	case inst.Service == "":
		return nil, errors.New("instance has no service name")
	case inst.Address == "":
		return nil, errors.New("instance has no address")
	case inst.Port < 1 || inst.Port > 65535:
		return nil, fmt.Errorf("instance port %d is not in 1-65535", inst.Port)
	case strings.ContainsAny(inst.ID, "/?#"):
		// The ID becomes a path segment of the agent's API.
		return nil, fmt.Errorf("instance ID %q contains /, ? or #", inst.ID)
	}
	id := inst.ID
	if id == "" {
		id = inst.Service + "-" + inst.Address + "-" + strconv.Itoa(inst.Port)
	}
	meta := maps.Clone(inst.Meta)
	if meta == nil {
		meta = map[string]string{}
	}
	for _, key := range []string{MetaVersion, MetaConnectServices} {
		if _, ok := meta[key]; ok {
			return nil, fmt.Errorf("instance metadata sets %q, which Register sets from the Instance's fields", key)
		}
	}
	if inst.Version != "" {
		meta[MetaVersion] = inst.Version
	}
	for _, s := range inst.ConnectServices {
		if s == "" || strings.Contains(s, ",") {
			return nil, fmt.Errorf("connect service name %q is empty or contains a comma", s)
		}
	}
	if len(inst.ConnectServices) > 0 {
		joined := strings.Join(inst.ConnectServices, ",")
		if len(joined) > maxMetaValue {
			return nil, fmt.Errorf("connect service names take %d bytes; Consul's metadata values hold at most %d", len(joined), maxMetaValue)
		}
		meta[MetaConnectServices] = joined
	}
	hostPort := net.JoinHostPort(inst.Address, strconv.Itoa(inst.Port))
	return &api.AgentServiceRegistration{
		ID:      id,
		Name:    inst.Service,
		Address: inst.Address,
		Port:    inst.Port,
		Tags:    append([]string(nil), inst.ConnectServices...),
		Meta:    meta,
		Check: &api.AgentServiceCheck{
			Name:                           inst.Service + " readiness",
			HTTP:                           "http://" + hostPort + r.checkPath,
			Method:                         http.MethodGet,
			Interval:                       r.cfg.CheckInterval.String(),
			Timeout:                        r.cfg.CheckInterval.String(),
			DeregisterCriticalServiceAfter: r.cfg.DeregisterCriticalAfter.String(),
		},
	}, nil
}

// Deregister removes the instance with the given ID from the agent, and so
// from the catalog. An ID the agent does not know — already deregistered,
// reaped, or lost in an agent restart — is not an error, so shutting down
// twice, or after Consul forgot the instance, succeeds.
func (r *Registry) Deregister(ctx context.Context, id string) error {
	if id == "" || strings.ContainsAny(id, "/?#") {
		return fmt.Errorf("deregister %q: not an instance ID", id)
	}
	q := (&api.QueryOptions{}).WithContext(ctx)
	err := r.client.Agent().ServiceDeregisterOpts(id, q)
	var status api.StatusError
	if errors.As(err, &status) && status.Code == http.StatusNotFound {
		r.logger.InfoContext(ctx, "not registered in Consul; nothing to deregister", slog.String("id", id))
		return nil
	}
	if err != nil {
		return fmt.Errorf("deregister %q from Consul at %s: %w", id, r.cfg.Addr, err)
	}
	r.logger.InfoContext(ctx, "deregistered from Consul", slog.String("id", id))
	return nil
}
