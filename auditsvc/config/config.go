// Package config is the Audit service's configuration: its sections, their
// defaults (default.yaml, embedded in the binary) and their rules.
package config

import (
	_ "embed"

	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/service"

	"portcullis.dev/auditsvc/internal/audit"
)

//go:embed default.yaml
var defaults []byte

// Config is the Audit service's configuration.
type Config struct {
	service.Config `koanf:",squash"`
	// Audit holds the log's limits: batch size, metadata size, page size.
	Audit audit.Config `koanf:"audit"`
}

// Load reads the configuration from the defaults, the file args or the
// environment names, and the environment (see default.yaml).
func Load(args []string) (Config, error) {
	return kconfig.Load[Config](defaults, kconfig.WithArgs(args))
}
