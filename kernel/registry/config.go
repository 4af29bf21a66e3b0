package registry

import (
	"errors"
	"fmt"
	"time"

	"portcullis.dev/kernel/config"
)

// Defaults for the zero values of [Config].
const (
	DefaultAddr                    = "127.0.0.1:8500"
	DefaultDeregisterCriticalAfter = time.Minute
	DefaultCheckInterval           = 2 * time.Second
)

// Bounds that [Config.Validate] enforces on values that are set.
const (
	// MinDeregisterCriticalAfter is Consul's own minimum: it silently raises
	// anything lower to one minute, so a lower value is refused rather than
	// left to mislead.
	MinDeregisterCriticalAfter = time.Minute
	// MinCheckInterval is Consul's own minimum for HTTP checks: it silently
	// raises anything lower to one second.
	MinCheckInterval = time.Second
)

// Config is what an operator configures about the Consul agent a service
// talks to, usually as the registry section of the service's configuration.
// Zero values mean the defaults above, so the zero Config talks to a local
// agent.
//
// TLS settings, a namespace or partition, and a Token left empty are taken
// from Consul's standard environment variables (CONSUL_CACERT,
// CONSUL_HTTP_TOKEN, ...) as the consul command does.
type Config struct {
	// Addr is the agent's HTTP API: host:port, or a URL with the scheme
	// http, https or unix (unix:///run/consul.sock). Empty means
	// [DefaultAddr].
	Addr string `koanf:"addr"`
	// Token is the ACL token sent with every request. Empty sends
	// CONSUL_HTTP_TOKEN if set, or none, so the agent's default token
	// applies.
	Token config.Secret `koanf:"token"`
	// Datacenter is the datacenter whose instances and catalog the
	// watchers read. Empty means the agent's own. Instances always register
	// in the agent's own datacenter.
	Datacenter string `koanf:"datacenter"`
	// DeregisterCriticalAfter is how long an instance's health check may
	// stay critical before Consul removes the instance. Consul's reaper runs
	// every 30 seconds, so removal can take up to that much longer. Zero
	// means [DefaultDeregisterCriticalAfter]; otherwise it must be at least
	// [MinDeregisterCriticalAfter].
	DeregisterCriticalAfter time.Duration `koanf:"deregister_critical_after" validate:"min=0s"`
	// CheckInterval is how often Consul probes each instance's readiness
	// endpoint; one probe may take as long before it counts as failed. Zero
	// means [DefaultCheckInterval]; otherwise it must be at least
	// [MinCheckInterval].
	CheckInterval time.Duration `koanf:"check_interval" validate:"min=0s,max=10m"`
}

// Validate checks the rules the validate tags cannot express. It returns
// [*config.KeyError] values joined with [errors.Join], so that
// [config.Load] reports them under the section's keys.
func (c Config) Validate() error {
	var errs []error
	if c.DeregisterCriticalAfter != 0 && c.DeregisterCriticalAfter < MinDeregisterCriticalAfter {
		errs = append(errs, &config.KeyError{
			Key: "deregister_critical_after",
			Err: fmt.Errorf("must be 0 (the default, %s) or at least %s, got %s", DefaultDeregisterCriticalAfter, MinDeregisterCriticalAfter, c.DeregisterCriticalAfter),
		})
	}
	if c.CheckInterval != 0 && c.CheckInterval < MinCheckInterval {
		errs = append(errs, &config.KeyError{
			Key: "check_interval",
			Err: fmt.Errorf("must be 0 (the default, %s) or at least %s, got %s", DefaultCheckInterval, MinCheckInterval, c.CheckInterval),
		})
	}
	return errors.Join(errs...)
}

// withDefaults returns c with its zero values replaced by the defaults.
func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.DeregisterCriticalAfter == 0 {
		c.DeregisterCriticalAfter = DefaultDeregisterCriticalAfter
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	return c
}
