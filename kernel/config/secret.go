package config

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
)

// Redacted is what a [Secret], or the password of a [DSN], prints as.
const Redacted = "[REDACTED]"

// Secret is a configuration value that must never be printed or logged: a
// password, a signing key, an API token. Every way of printing it — fmt's
// verbs including %#v, encoding/json, encoding.TextMarshaler (and so YAML),
// log/slog — shows [Redacted], or nothing when it is empty. [Secret.Value]
// returns the real value. The zero value is an empty secret.
//
// Keep Secret fields exported: fmt cannot call the methods of a value in an
// unexported field, and would print it.
type Secret string

// Value returns the secret itself.
func (s Secret) Value() string { return string(s) }

// String returns [Redacted], or "" if s is empty.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString implements fmt.GoStringer for %#v.
func (s Secret) GoString() string { return "config.Secret(" + strconv.Quote(s.String()) + ")" }

// Format implements fmt.Formatter, so that no verb prints the secret: fmt
// shows the value of a mismatched verb such as %d without calling String.
func (s Secret) Format(f fmt.State, verb rune) { formatRedacted(f, verb, s.String(), s.GoString()) }

// MarshalText implements encoding.TextMarshaler with the redacted form.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalJSON implements json.Marshaler with the redacted form.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// LogValue implements slog.LogValuer with the redacted form.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// DSN is a database connection string, either a URL
// (postgres://user:password@host:5432/db?sslmode=disable) or a libpq
// key=value list (host=db user=app password=x dbname=app). It prints like a
// [Secret] but hides only the password — in the user information, or in a
// password or sslpassword parameter — so an operator can still see where it
// points:
//
//	postgres://portcullis:[REDACTED]@db:5432/portcullis?sslmode=disable
//
// A string DSN cannot make sense of is redacted whole. [DSN.Value] returns
// the real value. The zero value is an empty DSN.
type DSN string

// Value returns the connection string itself, password included.
func (d DSN) Value() string { return string(d) }

// String returns the connection string with its password replaced by
// [Redacted].
func (d DSN) String() string { return redactDSN(string(d)) }

// GoString implements fmt.GoStringer for %#v.
func (d DSN) GoString() string { return "config.DSN(" + strconv.Quote(d.String()) + ")" }

// Format implements fmt.Formatter, so that no verb prints the password.
func (d DSN) Format(f fmt.State, verb rune) { formatRedacted(f, verb, d.String(), d.GoString()) }

// MarshalText implements encoding.TextMarshaler with the redacted form.
func (d DSN) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// MarshalJSON implements json.Marshaler with the redacted form.
func (d DSN) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// LogValue implements slog.LogValuer with the redacted form.
func (d DSN) LogValue() slog.Value { return slog.StringValue(d.String()) }

// formatRedacted prints the redacted form s for any verb but %#v, for which
// it prints goString.
func formatRedacted(f fmt.State, verb rune, s, goString string) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, goString)
		return
	}
	_, _ = fmt.Fprintf(f, fmt.FormatString(f, verb), s)
}

func redactDSN(s string) string {
	switch {
	case s == "":
		return ""
	case hasScheme(s):
		return redactURL(s)
	case startsWithKeyValue(s):
		return redactKeyValues(s)
	case strings.Contains(s, "@"):
		return redactUserinfo(s)
	}
	return s
}

func isPasswordKey(key string) bool {
	switch strings.ToLower(key) {
	case "password", "sslpassword", "pass", "passwd", "pwd":
		return true
	}
	return false
}

// hasScheme reports whether s starts with "scheme://" (RFC 3986 §3.1).
func hasScheme(s string) bool {
	i := strings.Index(s, "://")
	if i <= 0 {
		return false
	}
	for j, r := range s[:i] {
		isAlpha := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !isAlpha && (j == 0 || !(r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	return true
}

// redactURL hides the password of a URL without parsing it with net/url,
// which rejects forms drivers accept (several hosts, unescaped characters in
// the password) and would then leave nothing to show.
func redactURL(s string) string {
	i := strings.Index(s, "://") + len("://")
	return s[:i] + redactUserinfo(s[i:])
}

// redactUserinfo hides the password in "user:password@rest" and in the
// password parameters of rest's query.
func redactUserinfo(s string) string {
	// The user information ends at the last '@' before the path; a password
	// may itself hold '@' or '/', so search up to the first '/' after the
	// first '@'. Erring that way hides too much, never too little.
	end := len(s)
	if first := strings.IndexByte(s, '@'); first >= 0 {
		if slash := strings.IndexByte(s[first:], '/'); slash >= 0 {
			end = first + slash
		}
	}
	at := strings.LastIndexByte(s[:end], '@')
	if at < 0 {
		return redactQuery(s)
	}
	userinfo, rest := s[:at], s[at:]
	if colon := strings.IndexByte(userinfo, ':'); colon >= 0 && colon < len(userinfo)-1 {
		userinfo = userinfo[:colon+1] + Redacted
	}
	return userinfo + redactQuery(rest)
}

// redactQuery hides the values of password parameters in s's query.
func redactQuery(s string) string {
	q := strings.IndexByte(s, '?')
	if q < 0 {
		return s
	}
	query, fragment, hasFragment := strings.Cut(s[q+1:], "#")
	params := strings.Split(query, "&")
	for i, p := range params {
		k, _, hasValue := strings.Cut(p, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if hasValue && isPasswordKey(k) {
			params[i] = p[:strings.IndexByte(p, '=')+1] + Redacted
		}
	}
	out := s[:q+1] + strings.Join(params, "&")
	if hasFragment {
		out += "#" + fragment
	}
	return out
}

// startsWithKeyValue reports whether s looks like a libpq key=value list:
// an identifier, optional spaces, then '='.
func startsWithKeyValue(s string) bool {
	s = strings.TrimLeft(s, " \t\n")
	i := 0
	for i < len(s) && (s[i] == '_' || s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z' || i > 0 && s[i] >= '0' && s[i] <= '9') {
		i++
	}
	if i == 0 {
		return false
	}
	return strings.HasPrefix(strings.TrimLeft(s[i:], " \t"), "=")
}

// redactKeyValues hides password values in a libpq key=value list, whose
// values may be single-quoted with backslash escapes. Anything it cannot
// parse is redacted whole.
func redactKeyValues(s string) string {
	var b strings.Builder
	i := 0
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	for i < len(s) {
		start := i
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		eq := strings.IndexByte(s[i:], '=')
		if i == len(s) {
			b.WriteString(s[start:])
			break
		}
		if eq < 0 {
			return Redacted
		}
		key := strings.TrimSpace(s[i : i+eq])
		if key == "" || strings.ContainsAny(key, " \t\n\r'") {
			return Redacted
		}
		i += eq + 1
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		valueStart := i
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				if s[i] == '\\' {
					i += 2
					continue
				}
				if s[i] == '\'' {
					closed = true
					i++
					break
				}
				i++
			}
			if !closed {
				return Redacted
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				i++
			}
		}
		b.WriteString(s[start:valueStart])
		if isPasswordKey(key) && i > valueStart {
			b.WriteString(Redacted)
		} else {
			b.WriteString(s[valueStart:i])
		}
	}
	return b.String()
}
