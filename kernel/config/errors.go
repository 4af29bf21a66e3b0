package config

import "strings"

// KeyError is one problem with one configuration key. [Load] returns all of
// them joined with [errors.Join]; use [errors.As] to inspect one.
//
// A [Validator] may return KeyErrors too: Key is then relative to the section
// that implements Validator, and Load makes it absolute and fills in Source.
type KeyError struct {
	// Key is the dotted koanf key, such as "database.max_open_conns", with
	// an index for an element of a list ("upstreams[1].host"). It is empty
	// for a problem with the configuration as a whole.
	Key string
	// Source is the layer the value came from: "defaults",
	// "file /etc/portcullis/auth.yaml" or "env PORTCULLIS_DATABASE_DSN". It
	// is empty when no layer set the key.
	Source string
	// Err says what is wrong. It never contains the value of a secret.
	Err error
}

// Error returns the message, such as
// "config: database.max_open_conns (env PORTCULLIS_DATABASE_MAX_OPEN_CONNS): must be at most 1000, got 5000".
func (e *KeyError) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.Key != "" {
		b.WriteString(e.Key)
		if e.Source != "" {
			b.WriteString(" (")
			b.WriteString(e.Source)
			b.WriteString(")")
		}
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns e.Err.
func (e *KeyError) Unwrap() error { return e.Err }

// Validator is implemented by a config struct, or a section of one, that has
// rules spanning several fields. [Load] calls Validate after the validate
// tags of the struct and everything inside it passed, so Validate may rely on
// them.
type Validator interface {
	Validate() error
}
