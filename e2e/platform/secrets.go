package platform

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// generatedSecrets are the secrets a local platform needs and makes up
// itself: 32 random bytes each, base64. They are environment variables the
// services read (see their config/default.yaml).
var generatedSecrets = []string{
	// Signs the tokens services call each other's internal procedures with.
	"PORTCULLIS_SERVICE_AUTH_SERVICE_KEY",
	// Encrypts the Auth service's signing keys and TOTP secrets at rest.
	"PORTCULLIS_KEYS_KEK",
	// The PostgreSQL passwords of the services' own roles.
	rolePasswordVar("identitysvc"), rolePasswordVar("authsvc"), rolePasswordVar("authzsvc"), rolePasswordVar("auditsvc"),
	// The bootstrap administrator's password, unless PORTCULLIS_ADMIN_PASSWORD is set.
	adminPasswordVar,
}

const adminPasswordVar = "PORTCULLIS_ADMIN_PASSWORD"

// serviceSecrets are the generated secrets each service is given; the
// others (role passwords, the admin's) stay with the platform.
var serviceSecrets = map[string][]string{
	"identitysvc": {"PORTCULLIS_SERVICE_AUTH_SERVICE_KEY"},
	"authsvc":     {"PORTCULLIS_SERVICE_AUTH_SERVICE_KEY", "PORTCULLIS_KEYS_KEK"},
	"authzsvc":    {"PORTCULLIS_SERVICE_AUTH_SERVICE_KEY"},
	"auditsvc":    {"PORTCULLIS_SERVICE_AUTH_SERVICE_KEY"},
	"gateway":     nil,
}

// rolePasswordVar names the generated password of service's database role.
// It is the platform's own; services get it inside their DSN.
func rolePasswordVar(service string) string {
	return "PORTCULLIS_ROLE_PASSWORD_" + strings.ToUpper(service)
}

// secretsFile is where secrets keeps the generated secrets of a state
// directory; "" when there is none and nothing is kept.
func secretsFile(stateDir string) string {
	if stateDir == "" {
		return ""
	}
	return filepath.Join(stateDir, "secrets.env")
}

// secrets returns the platform's secrets by name, and which of them were
// made up just now. With a state directory the generated ones are kept in
// <dir>/secrets.env (mode 0600) and reused, so data encrypted by one run
// stays readable by the next; without one they are new each time. A value
// in the environment wins for this run but is never written to the file:
// an operator who passes a secret in does not expect a copy on disk.
func secrets(stateDir string) (map[string]string, map[string]bool, error) {
	// kept is what the file holds and will hold: generated values only.
	kept := map[string]string{}
	path := secretsFile(stateDir)
	if path != "" {
		f, err := os.Open(path)
		switch {
		case err == nil:
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if k, v, ok := strings.Cut(sc.Text(), "="); ok && !strings.HasPrefix(k, "#") {
					kept[k] = v
				}
			}
			_ = f.Close()
			if err := sc.Err(); err != nil {
				return nil, nil, fmt.Errorf("read %s: %w", path, err)
			}
		case !errors.Is(err, os.ErrNotExist):
			return nil, nil, fmt.Errorf("read %s: %w", path, err)
		}
	}
	values := map[string]string{}
	fresh := map[string]bool{}
	for _, name := range generatedSecrets {
		if v := os.Getenv(name); v != "" {
			values[name] = v
			continue
		}
		if kept[name] != "" {
			values[name] = kept[name]
			continue
		}
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, nil, fmt.Errorf("generate %s: %w", name, err)
		}
		values[name] = base64.StdEncoding.EncodeToString(b)
		kept[name] = values[name]
		fresh[name] = true
	}
	if len(fresh) == 0 || path == "" {
		return values, fresh, nil
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create state directory: %w", err)
	}
	var b strings.Builder
	b.WriteString("# Secrets generated for the local platform; keep them to keep your data readable.\n")
	for _, name := range generatedSecrets {
		if v := kept[name]; v != "" {
			fmt.Fprintf(&b, "%s=%s\n", name, v)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return nil, nil, fmt.Errorf("write %s: %w", path, err)
	}
	return values, fresh, nil
}

// platformOnly reports whether an environment entry ("NAME=value") is one
// of the platform's own secrets, which no service or Consul may see: the
// admin's password, the PostgreSQL roles' passwords (each service gets its
// own inside its DSN) and the URL the platform administers the database
// server with (it may carry a superuser's password; no service reads it).
func platformOnly(entry string) bool {
	name, _, _ := strings.Cut(entry, "=")
	return name == adminPasswordVar || name == "PORTCULLIS_DATABASE_URL" ||
		strings.HasPrefix(name, "PORTCULLIS_ROLE_PASSWORD_")
}

// childEnviron is the platform's environment without its own secrets, the
// base of every child's environment.
func childEnviron() []string {
	return slices.DeleteFunc(os.Environ(), platformOnly)
}
