// Package config is the Authz service's configuration: its sections, their
// defaults (default.yaml, embedded in the binary) and their rules.
package config

import (
	_ "embed"

	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/service"

	"portcullis.dev/authzsvc/internal/authz"
)

//go:embed default.yaml
var defaults []byte

// Config is the Authz service's configuration.
type Config struct {
	service.Config `koanf:",squash"`
	// RBAC tunes the Authz domain: its decision index, the notification
	// connection that keeps it current, the bootstrap admins. It is not
	// `authz:`, which is the kernel's cache of decisions this service would
	// ask another Authz for (unused here: the service answers itself).
	RBAC authz.Config `koanf:"rbac"`
}

// Load reads the configuration from the defaults, the file args or the
// environment names, and the environment (see default.yaml).
func Load(args []string) (Config, error) {
	return kconfig.Load[Config](defaults, kconfig.WithArgs(args))
}
