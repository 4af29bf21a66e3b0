// Package config is the Identity service's configuration: its sections, their
// defaults (default.yaml, embedded in the binary) and their rules.
package config

import (
	_ "embed"

	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/service"

	"portcullis.dev/identitysvc/internal/identity"
)

//go:embed default.yaml
var defaults []byte

// Config is the Identity service's configuration.
type Config struct {
	service.Config `koanf:",squash"`
	Identity       identity.Config     `koanf:"identity"`
	Mail           identity.MailConfig `koanf:"mail"`
}

// Load reads the configuration from the defaults, the file args or the
// environment names, and the environment (see default.yaml).
func Load(args []string) (Config, error) {
	return kconfig.Load[Config](defaults, kconfig.WithArgs(args))
}
