package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"
)

// EnvPrefix starts the name of every environment variable that sets a key.
const EnvPrefix = "PORTCULLIS_"

// FileEnv names the environment variable that names a config file when the
// arguments have no --config flag.
const FileEnv = "PORTCULLIS_CONFIG"

// leaf is one key of a config struct: a field that is not a section.
type leaf struct {
	key   string
	index []int // for reflect.Value.FieldByIndex from the root
	env   string
}

// schema is the set of keys a config struct accepts, derived from its koanf
// tags.
type schema struct {
	leaves   []leaf // in declaration order
	byKey    map[string]int
	sections map[string]bool
}

// isSection reports whether a field of type t holds keys of its own rather
// than being one. Structs that decode themselves from text (time.Time, ...)
// are keys.
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

// fieldKey returns the koanf name of a struct field, whether its fields are
// squashed into the parent, and whether it takes part at all.
func fieldKey(f reflect.StructField) (name string, squash, ok bool) {
	if !f.IsExported() {
		return "", false, false
	}
	tag := f.Tag.Get("koanf")
	if tag == "-" {
		return "", false, false
	}
	name, opts, _ := strings.Cut(tag, ",")
	for opt := range strings.SplitSeq(opts, ",") {
		if opt == "squash" {
			squash = true
		}
	}
	if name == "" && f.Anonymous && isSection(f.Type) {
		squash = true
	}
	if squash {
		return "", true, true
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name, false, true
}

func joinKey(section, name string) string {
	if section == "" {
		return name
	}
	return section + "." + name
}

// envName returns the environment variable that sets key.
func envName(key string) string {
	var b strings.Builder
	b.WriteString(EnvPrefix)
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func newSchema(t reflect.Type) (*schema, error) {
	s := &schema{byKey: make(map[string]int), sections: make(map[string]bool)}
	if err := s.walk(t, "", nil); err != nil {
		return nil, err
	}
	envs := make(map[string]string, len(s.leaves))
	for _, l := range s.leaves {
		if other, ok := envs[l.env]; ok {
			return nil, fmt.Errorf("config: keys %s and %s both map to %s; rename one", other, l.key, l.env)
		}
		if l.env == FileEnv {
			return nil, fmt.Errorf("config: key %s clashes with %s, which names the config file", l.key, FileEnv)
		}
		envs[l.env] = l.key
	}
	return s, nil
}

func (s *schema) walk(t reflect.Type, section string, index []int) error {
	for i := range t.NumField() {
		f := t.Field(i)
		name, squash, ok := fieldKey(f)
		if !ok {
			continue
		}
		idx := append(append([]int(nil), index...), i)
		if squash {
			if !isSection(f.Type) {
				return fmt.Errorf("config: field %s of %s: squash needs a struct", f.Name, t)
			}
			if err := s.walk(f.Type, section, idx); err != nil {
				return err
			}
			continue
		}
		key := joinKey(section, name)
		if _, dup := s.byKey[key]; dup || s.sections[key] {
			return fmt.Errorf("config: key %s is declared twice in %s", key, t)
		}
		if isSection(f.Type) {
			s.sections[key] = true
			if err := s.walk(f.Type, key, idx); err != nil {
				return err
			}
			continue
		}
		s.byKey[key] = len(s.leaves)
		s.leaves = append(s.leaves, leaf{key: key, index: idx, env: envName(key)})
	}
	return nil
}

// unknown returns the shortest unknown prefix of a flat key as koanf reports
// it, or "" when the key is accepted. A key below a leaf belongs to a map or
// struct value and is checked when that value is decoded.
func (s *schema) unknown(flat string) string {
	parts := strings.Split(flat, ".")
	key := ""
	for _, p := range parts {
		key = joinKey(key, p)
		if _, ok := s.byKey[key]; ok {
			return ""
		}
		if !s.sections[key] {
			return key
		}
	}
	return ""
}
