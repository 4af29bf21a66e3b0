// Package service assembles the kernel's parts the way every Portcullis
// service runs them — logger, Consul registry, clients for other services,
// token verification and permission checks — so that a service's main only
// adds its database and its handlers.
//
// A service's configuration embeds [Config] (with `koanf:",squash"`) and
// adds its own sections; its main calls [New] and then [Kit.Server].
package service

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/outbox"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	"portcullis.dev/proto/audit/v1/auditv1connect"
	"portcullis.dev/proto/authz/v1/authzv1connect"
)

// AuthzService is the Consul name of the Authz service, which answers
// permission checks for every other service.
const AuthzService = "authzsvc"

// Config is what every service's configuration has in common. Each
// service's config/default.yaml sets every key, with a comment.
type Config struct {
	Logging  logging.Config  `koanf:"logging"`
	Server   rpc.Config      `koanf:"server"`
	Registry registry.Config `koanf:"registry"`
	Database database.Config `koanf:"database"`
	// Tokens says how access tokens are verified: against the Auth
	// service's JWKS.
	Tokens authn.Config `koanf:"tokens"`
	// ServiceAuth holds the key that signs and verifies service tokens.
	ServiceAuth authn.ServiceConfig `koanf:"service_auth"`
	Authz       AuthzConfig         `koanf:"authz"`
	// Outbox tunes the relay that delivers the service's audit events.
	Outbox outbox.Config `koanf:"outbox"`
}

// AuditService is the Consul name of the Audit service, which receives
// every service's audit events.
const AuditService = "auditsvc"

// AuthzConfig tunes the permission checks a service makes.
type AuthzConfig struct {
	// DecisionTTL is how long a permission decision is reused; a grant or
	// revocation reaches the service within it. Zero means 500ms, so that a
	// revocation takes effect platform-wide within a second.
	DecisionTTL time.Duration `koanf:"decision_ttl" validate:"min=0,max=1m"`
	// MaxDecisions bounds the decision cache. Zero means 10000.
	MaxDecisions int `koanf:"max_decisions" validate:"min=0,max=10000000"`
}

// Kit is a service's wiring: what its handlers and its server need.
type Kit struct {
	Name, Version string
	Logger        *slog.Logger
	Registry      *registry.Registry
	// Clients builds clients for other services: rpc.NewClient(kit.Clients,
	// "identitysvc", identityv1connect.NewIdentityServiceClient).
	Clients *rpc.ClientFactory
	// Policy enforces the contract's access options. A service may replace
	// its Authorizer (the Authz service answers its own checks).
	Policy *rpc.AccessPolicy
	// Authz asks the Authz service, uncached: Policy's Authorizer caches
	// its checks.
	Authz *rpc.AuthzChecker

	cfg Config
}

// New wires the kernel for the service name at version from cfg.
func New(name, version string, cfg Config, logger *slog.Logger) (*Kit, error) {
	logger = logging.OrDiscard(logger)
	reg, err := registry.New(cfg.Registry, registry.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	tokens, err := authn.NewServiceTokenSource(name, cfg.ServiceAuth, authn.WithLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("service tokens: %w", err)
	}
	services, err := authn.NewServiceVerifier(name, cfg.ServiceAuth, authn.WithLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("service tokens: %w", err)
	}
	clients := rpc.NewClientFactory(reg, rpc.WithClientLogger(logger), rpc.WithServiceTokens(tokens))
	users, err := authn.NewVerifier(cfg.Tokens, authn.WithHTTPClient(clients.HTTPClient()), authn.WithLogger(logger))
	if err != nil {
		clients.Close()
		return nil, fmt.Errorf("access tokens: %w", err)
	}
	authz := rpc.NewAuthzChecker(rpc.NewClient(clients, AuthzService, authzv1connect.NewAuthzServiceClient))
	return &Kit{
		Name:     name,
		Version:  version,
		Logger:   logger,
		Registry: reg,
		Clients:  clients,
		Policy: &rpc.AccessPolicy{
			Users:      users,
			Services:   services,
			Authorizer: rpc.NewCachedAuthorizer(authz, cfg.Authz.DecisionTTL, cfg.Authz.MaxDecisions),
		},
		Authz: authz,
		cfg:   cfg,
	}, nil
}

// Server returns the service's RPC server, registered in Consul and
// enforcing the access policy; opts add readiness checks, closers and the
// like.
func (k *Kit) Server(opts ...rpc.Option) *rpc.Server {
	return rpc.NewServer(k.Name, k.Version, k.cfg.Server, append([]rpc.Option{
		rpc.WithLogger(k.Logger),
		rpc.WithRegistry(k.Registry),
		rpc.WithAccessPolicy(k.Policy),
	}, opts...)...)
}

// OutboxRelay returns the server options that run the service's outbox
// relay over db (the service's pool) for as long as the server serves, with
// its backlog in /metrics and in /readyz's detail. Audit events written
// with [outbox.Enqueue] then reach the Audit service.
func (k *Kit) OutboxRelay(db *sql.DB) []rpc.Option {
	audit := rpc.NewClient(k.Clients, AuditService, auditv1connect.NewAuditServiceClient)
	relay := outbox.NewRelay(db, k.cfg.Database, audit, k.cfg.Outbox, k.Logger)
	return []rpc.Option{
		rpc.WithBackground("outbox relay", relay.Run),
		rpc.WithCollectors(relay.Collectors()...),
		rpc.WithReadinessDetail("outbox_backlog", func() string { return strconv.FormatInt(relay.Backlog(), 10) }),
	}
}

// Close releases the clients' resolvers and connections.
func (k *Kit) Close() error {
	if k == nil || k.Clients == nil {
		return errors.New("service: Close of a nil Kit")
	}
	k.Clients.Close()
	return nil
}

// BuildVersion is the version of the running binary's main module, as `go
// install module@version` or a release build records it, or "devel".
func BuildVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}
