package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
)

// Option configures [Load].
type Option func(*options)

type options struct {
	args      []string
	lookupEnv func(string) (string, bool)
	file      string
}

// WithArgs sets the command-line arguments, without the program name, in
// which Load looks for --config. The default is os.Args[1:]. Load ignores
// every other argument; nil means there are none.
func WithArgs(args []string) Option {
	return func(o *options) { o.args = args }
}

// WithLookupEnv sets the function Load reads environment variables with. The
// default is [os.LookupEnv]; tests pass a map's lookup so they never touch
// the process environment. A nil lookup means an empty environment.
func WithLookupEnv(lookup func(key string) (string, bool)) Option {
	return func(o *options) { o.lookupEnv = lookup }
}

// WithFile names the YAML file to load, overriding --config and
// PORTCULLIS_CONFIG. The file must exist.
func WithFile(path string) Option {
	return func(o *options) { o.file = path }
}

// layer is one source of values, loaded on its own so that every key can be
// traced back to where it was set.
type layer struct {
	name string // "defaults", "file /x.yaml", "env"
	k    *koanf.Koanf
	env  map[string]string // key -> variable, for the env layer
}

func (l *layer) source(key string) string {
	if l.env != nil {
		return "env " + l.env[key]
	}
	return l.name
}

// Load returns the configuration of type T, a struct, built from the
// defaults YAML, the config file and the environment (see the package
// documentation), decoded and validated.
//
// Problems with the values, including every failed rule, are returned
// together as [*KeyError]s joined with [errors.Join], so an operator sees
// them all at once. An unreadable or unparsable file, or a T that cannot
// describe a configuration, is returned alone. On error the returned T is
// the zero value.
func Load[T any](defaults []byte, opts ...Option) (T, error) {
	var cfg T
	o := options{lookupEnv: os.LookupEnv}
	if len(os.Args) > 1 {
		o.args = os.Args[1:]
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.lookupEnv == nil {
		o.lookupEnv = func(string) (string, bool) { return "", false }
	}

	t := reflect.TypeFor[T]()
	if t.Kind() != reflect.Struct {
		return cfg, fmt.Errorf("config: Load needs a struct type, got %s", t)
	}
	s, err := newSchema(t)
	if err != nil {
		return cfg, err
	}

	layers, err := readLayers(s, defaults, o)
	if err != nil {
		return cfg, err
	}
	l := &loader{schema: s, layers: layers}
	v := reflect.ValueOf(&cfg).Elem()
	l.checkKeys()
	l.decode(v)
	l.validate(v)
	if len(l.errs) > 0 {
		var zero T
		return zero, errors.Join(l.errs...)
	}
	return cfg, nil
}

func readLayers(s *schema, defaults []byte, o options) ([]*layer, error) {
	var layers []*layer

	k, err := loadYAML(rawbytes.Provider(defaults))
	if err != nil {
		return nil, fmt.Errorf("config: parse defaults: %w", err)
	}
	layers = append(layers, &layer{name: "defaults", k: k})

	path := o.file
	if path == "" {
		p, found, err := configArg(o.args)
		if err != nil {
			return nil, err
		}
		if found {
			path = p
		} else if p, ok := o.lookupEnv(FileEnv); ok {
			path = p
		}
	}
	if path != "" {
		k, err := loadYAML(file.Provider(path))
		if err != nil {
			return nil, fmt.Errorf("config: load file %s: %w", path, err)
		}
		layers = append(layers, &layer{name: "file " + path, k: k})
	}

	values := make(map[string]any)
	names := make(map[string]string)
	for _, lf := range s.leaves {
		if v, ok := o.lookupEnv(lf.env); ok {
			values[lf.key] = v
			names[lf.key] = lf.env
		}
	}
	k = koanf.New(".")
	if err := k.Load(confmap.Provider(values, "."), nil); err != nil {
		return nil, fmt.Errorf("config: load environment: %w", err)
	}
	layers = append(layers, &layer{name: "env", k: k, env: names})
	return layers, nil
}

// loadYAML loads one YAML layer and drops its nulls, which mean "not set
// here" rather than "erase what the earlier layers set".
func loadYAML(p koanf.Provider) (*koanf.Koanf, error) {
	k := koanf.New(".")
	if err := k.Load(p, yaml.Parser()); err != nil {
		return nil, err
	}
	for key, v := range k.All() {
		if v == nil {
			k.Delete(key)
		}
	}
	return k, nil
}

// configArg finds the last --config path in args, accepting the forms
// "--config path", "--config=path" and their one-dash spellings, as the flag
// package does. Scanning stops at "--".
func configArg(args []string) (path string, found bool, err error) {
	for i := 0; i < len(args); i++ {
		name, value, hasValue, ok := parseFlag(args[i])
		if !ok {
			if args[i] == "--" {
				break
			}
			continue
		}
		if name != "config" {
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return "", false, errors.New("config: flag --config needs a file path")
			}
			i++
			value = args[i]
		}
		if value == "" {
			return "", false, errors.New("config: flag --config needs a file path")
		}
		path, found = value, true
	}
	return path, found, nil
}

// parseFlag splits "-name", "--name" and "--name=value".
func parseFlag(arg string) (name, value string, hasValue, ok bool) {
	if len(arg) < 2 || arg[0] != '-' || arg == "--" {
		return "", "", false, false
	}
	arg = strings.TrimPrefix(arg[1:], "-")
	name, value, hasValue = strings.Cut(arg, "=")
	return name, value, hasValue, name != ""
}

// loader collects the problems of one Load.
type loader struct {
	schema *schema
	layers []*layer
	merged *koanf.Koanf
	failed map[string]bool // leaf keys that did not decode
	errs   []error
}

// sourceOf returns the last layer that set key or anything below it.
func (l *loader) sourceOf(key string) string {
	if i := strings.IndexByte(key, '['); i >= 0 {
		key = key[:i]
	}
	for i := len(l.layers) - 1; i >= 0; i-- {
		if l.layers[i].k.Exists(key) {
			return l.layers[i].source(key)
		}
	}
	return ""
}

func (l *loader) add(key, source string, err error) {
	l.errs = append(l.errs, &KeyError{Key: key, Source: source, Err: err})
}

// checkKeys reports keys in the YAML layers that the config type does not
// have, and values given where a section belongs.
func (l *loader) checkKeys() {
	for _, ly := range l.layers {
		if ly.env != nil {
			continue // built from known keys only
		}
		seen := make(map[string]bool)
		for _, flat := range ly.k.Keys() {
			if l.schema.sections[flat] {
				if m, ok := ly.k.Get(flat).(map[string]any); !ok || len(m) > 0 {
					l.add(flat, ly.name, fmt.Errorf("is a section, but got %s instead of a mapping of keys", yamlKind(ly.k.Get(flat))))
					// Keep the earlier layers' keys in the section, so this
					// one mistake is reported once rather than for each.
					ly.k.Delete(flat)
				}
				continue
			}
			if bad := l.schema.unknown(flat); bad != "" && !seen[bad] {
				seen[bad] = true
				l.add(bad, ly.name, errors.New("unknown key"))
			}
		}
	}
}

// decode merges the layers and decodes every key that one of them set.
func (l *loader) decode(root reflect.Value) {
	l.merged = koanf.New(".")
	for _, ly := range l.layers {
		if err := l.merged.Merge(ly.k); err != nil {
			l.errs = append(l.errs, fmt.Errorf("config: merge %s: %w", ly.name, err))
			return
		}
	}
	l.failed = make(map[string]bool)
	for _, lf := range l.schema.leaves {
		if !l.merged.Exists(lf.key) {
			continue
		}
		raw := l.merged.Get(lf.key)
		if raw == nil {
			continue
		}
		for _, m := range decodeLeaf(raw, root.FieldByIndex(lf.index)) {
			l.failed[lf.key] = true
			l.add(lf.key+m.sub, l.sourceOf(lf.key), errors.New(m.msg))
		}
	}
}
