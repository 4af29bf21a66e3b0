package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Password length rules of NIST SP 800-63B §5.1.1.2: at least 8 characters
// (Config.MinPasswordLength may ask for more), a generous maximum, and no
// composition rules.
const (
	// MinPasswordRunes is the floor under Config.MinPasswordLength.
	MinPasswordRunes = 8
	// MaxPasswordBytes bounds the work an attacker can make one hash cost.
	MaxPasswordBytes = 1024
)

// Argon2Params are argon2id's cost parameters.
type Argon2Params struct {
	// MemoryKiB is the memory per hash. OWASP's minimum is 19456 (19 MiB).
	MemoryKiB uint32 `koanf:"memory_kib" validate:"min=8192,max=4194304"`
	// Iterations is the number of passes. OWASP's minimum with 19 MiB is 2.
	Iterations uint32 `koanf:"iterations" validate:"min=1,max=64"`
	// Parallelism is the number of lanes.
	Parallelism uint8 `koanf:"parallelism" validate:"min=1,max=64"`
}

// hasher hashes and checks passwords with argon2id, holding at most a fixed
// number of hashes in flight: each takes MemoryKiB of memory, so a burst of
// logins must queue rather than exhaust the machine.
type hasher struct {
	params Argon2Params
	slots  chan struct{}
	// derived counts argon2id runs, so tests can check that every kind of
	// refused login costs exactly one, like a successful one.
	derived atomic.Uint64
}

func newHasher(p Argon2Params, concurrency int) *hasher {
	return &hasher{params: p, slots: make(chan struct{}, max(concurrency, 1))}
}

const (
	saltBytes = 16
	keyBytes  = 32
)

// hash returns the PHC string of password.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, saltBytes)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key, err := h.derive(ctx, password, salt, h.params)
	if err != nil {
		return "", err
	}
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		h.params.MemoryKiB, h.params.Iterations, h.params.Parallelism, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// check reports whether password matches the PHC string encoded, and
// whether encoded was made with other parameters than the current ones
// (so it should be rehashed now that the password is known).
func (h *hasher) check(ctx context.Context, password, encoded string) (ok, stale bool, err error) {
	p, salt, want, err := parsePHC(encoded)
	if err != nil {
		return false, false, err
	}
	got, err := h.derive(ctx, password, salt, p)
	if err != nil {
		return false, false, err
	}
	ok = subtle.ConstantTimeCompare(got, want) == 1
	return ok, p != h.params || len(want) != keyBytes, nil
}

// derive runs argon2id once a slot is free, or fails when ctx ends first.
func (h *hasher) derive(ctx context.Context, password string, salt []byte, p Argon2Params) ([]byte, error) {
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrBusy, ctx.Err())
	}
	defer func() { <-h.slots }()
	h.derived.Add(1)
	return argon2.IDKey([]byte(password), salt, p.Iterations, p.MemoryKiB, p.Parallelism, keyBytes), nil
}

var errBadPHC = errors.New("identity: malformed password hash")

// parsePHC reads $argon2id$v=19$m=...,t=...,p=...$salt$key.
func parsePHC(s string) (Argon2Params, []byte, []byte, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return Argon2Params{}, nil, nil, errBadPHC
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return Argon2Params{}, nil, nil, errBadPHC
	}
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Iterations, &p.Parallelism); err != nil {
		return Argon2Params{}, nil, nil, errBadPHC
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return Argon2Params{}, nil, nil, errBadPHC
	}
	key, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(key) == 0 {
		return Argon2Params{}, nil, nil, errBadPHC
	}
	return p, salt, key, nil
}

// checkPasswordRules applies the length rules, counting characters as
// code points; nothing else.
func checkPasswordRules(password string, minRunes int) error {
	switch {
	case len(password) > MaxPasswordBytes:
		return &ValidationError{Field: "password", Reason: fmt.Sprintf("must be at most %d bytes", MaxPasswordBytes)}
	case !utf8.ValidString(password):
		return &ValidationError{Field: "password", Reason: "must be valid UTF-8"}
	case utf8.RuneCountInString(password) < minRunes:
		return &ValidationError{Field: "password", Reason: fmt.Sprintf("must be at least %d characters", minRunes)}
	}
	return nil
}
