package authz

import (
	"cmp"
	"time"
)

// Config is the Authz domain's section, `rbac:` in config/default.yaml
// (`authz:` is taken by the kernel's decision cache for callers). Zero
// values mean the defaults below.
type Config struct {
	// MaxSubjects bounds the decision index: how many subjects' decisions
	// a replica keeps in memory. Zero means 100000.
	MaxSubjects int `koanf:"max_subjects" validate:"min=0,max=100000000"`
	// ListenerMinReconnect is the first wait before the notification
	// connection is re-established after it was lost; it doubles up to
	// ListenerMaxReconnect. The replica answers from the database, uncached,
	// in the meantime. Zero means 100ms.
	ListenerMinReconnect time.Duration `koanf:"listener_min_reconnect" validate:"min=0,max=1h"`
	// ListenerMaxReconnect caps the wait between reconnection attempts.
	// Zero means 10s.
	ListenerMaxReconnect time.Duration `koanf:"listener_max_reconnect" validate:"min=0,max=1h"`
	// ListenerPingInterval is how often the notification connection is
	// pinged, so that a connection that died silently (a network
	// partition) is noticed and the cache dropped: a ping unanswered for
	// as long (at least 1s) stops the caching until it is answered. Zero
	// means 5s.
	ListenerPingInterval time.Duration `koanf:"listener_ping_interval" validate:"min=0,max=1h"`
	// BootstrapAdmins are user IDs given the built-in admin role at start,
	// idempotently: how the first administrator comes to be. Empty gives
	// no one the role.
	BootstrapAdmins []string `koanf:"bootstrap_admins"`
}

// Defaults of the zero Config fields.
const (
	DefaultMaxSubjects          = 100000
	DefaultListenerMinReconnect = 100 * time.Millisecond
	DefaultListenerMaxReconnect = 10 * time.Second
	DefaultListenerPingInterval = 5 * time.Second
)

func (c Config) withDefaults() Config {
	c.MaxSubjects = cmp.Or(c.MaxSubjects, DefaultMaxSubjects)
	c.ListenerMinReconnect = cmp.Or(c.ListenerMinReconnect, DefaultListenerMinReconnect)
	c.ListenerMaxReconnect = max(cmp.Or(c.ListenerMaxReconnect, DefaultListenerMaxReconnect), c.ListenerMinReconnect)
	c.ListenerPingInterval = cmp.Or(c.ListenerPingInterval, DefaultListenerPingInterval)
	return c
}
