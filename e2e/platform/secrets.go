package platform

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// secrets returns the platform's generated secrets by name, and which of
// them were made up just now. With
// a state directory they are kept in <dir>/secrets.env (mode 0600) and
// reused, so data encrypted by one run stays readable by the next; without
// one they are new each time. A value already in the environment wins.
func secrets(stateDir string) (map[string]string, map[string]bool, error) {
	values := map[string]string{}
	path := ""
	if stateDir != "" {
		path = filepath.Join(stateDir, "secrets.env")
		f, err := os.Open(path)
		switch {
		case err == nil:
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if k, v, ok := strings.Cut(sc.Text(), "="); ok {
					values[k] = v
				}
			}
			_ = f.Close()
		case !errors.Is(err, os.ErrNotExist):
			return nil, nil, err
		}
	}
	fresh := map[string]bool{}
	for _, name := range generatedSecrets {
		if v := os.Getenv(name); v != "" {
			values[name] = v // the environment wins, and is not stored
			continue
		}
		if values[name] != "" {
			continue
		}
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, nil, err
		}
		values[name] = base64.StdEncoding.EncodeToString(b)
		fresh[name] = true
	}
	changed := len(fresh) > 0
	if changed && path != "" {
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return nil, nil, err
		}
		var b strings.Builder
		b.WriteString("# Secrets generated for the local platform; keep them to keep your data readable.\n")
		for _, name := range generatedSecrets {
			fmt.Fprintf(&b, "%s=%s\n", name, values[name])
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			return nil, nil, err
		}
	}
	return values, fresh, nil
}
