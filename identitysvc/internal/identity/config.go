package identity

import (
	"cmp"
	"time"
)

// Config is the `identity:` section of the service's configuration.
type Config struct {
	Argon2 Argon2Params `koanf:"argon2"`
	// HashConcurrency is how many password hashes may run at once; each
	// takes argon2.memory_kib of memory. Zero means 4.
	HashConcurrency int           `koanf:"hash_concurrency" validate:"min=0,max=1024"`
	Lockout         LockoutConfig `koanf:"lockout"`
	// MinPasswordLength is the fewest characters (Unicode code points) a
	// new password may have. NIST SP 800-63B §5.1.1.2 sets 8 as the floor;
	// the contract's default is 12. Zero (only possible when the struct is
	// built in code) means 12.
	MinPasswordLength int `koanf:"min_password_length" validate:"min=8,max=256"`
	// MailCooldown is the least time between two verification mails, or two
	// password-reset mails, to one user, so the service cannot be used to
	// flood a mailbox. Zero means 1m.
	MailCooldown time.Duration `koanf:"mail_cooldown" validate:"min=1s,max=24h"`
	// VerificationTTL is how long an email-verification link works.
	VerificationTTL time.Duration `koanf:"verification_ttl" validate:"min=1m,max=720h"`
	// ResetTTL is how long a password-reset link works.
	ResetTTL time.Duration `koanf:"reset_ttl" validate:"min=1m,max=24h"`
	// PublicURL is where users open the links in emails; the token and
	// what it is for are appended as ?token=...&purpose=verify_email (or
	// reset_password).
	PublicURL string `koanf:"public_url" validate:"required"`
	// SessionEndRetry is how often the ends of users' sessions that the
	// Auth service did not take at once are tried again; each waits twice
	// as long after each failure, up to 5m. Zero means 10s.
	SessionEndRetry time.Duration `koanf:"session_end_retry" validate:"min=0,max=5m"`
}

// LockoutConfig says when repeated failed logins lock an account.
type LockoutConfig struct {
	// Threshold failures within Window lock the account. Zero disables
	// lockout.
	Threshold int `koanf:"threshold" validate:"min=0,max=1000"`
	// Window is how far back failures count.
	Window time.Duration `koanf:"window" validate:"min=1s"`
	// Duration is how long the account stays locked.
	Duration time.Duration `koanf:"duration" validate:"min=1s"`
}

func (c Config) withDefaults() Config {
	c.HashConcurrency = cmp.Or(c.HashConcurrency, 4)
	c.MinPasswordLength = max(cmp.Or(c.MinPasswordLength, 12), MinPasswordRunes)
	c.MailCooldown = cmp.Or(c.MailCooldown, time.Minute)
	c.VerificationTTL = cmp.Or(c.VerificationTTL, 72*time.Hour)
	c.ResetTTL = cmp.Or(c.ResetTTL, time.Hour)
	c.SessionEndRetry = cmp.Or(c.SessionEndRetry, 10*time.Second)
	c.Lockout.Window = cmp.Or(c.Lockout.Window, 15*time.Minute)
	c.Lockout.Duration = cmp.Or(c.Lockout.Duration, 15*time.Minute)
	if c.Argon2 == (Argon2Params{}) {
		c.Argon2 = Argon2Params{MemoryKiB: 19456, Iterations: 2, Parallelism: 1}
	}
	return c
}
