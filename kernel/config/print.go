package config

import (
	"encoding"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// PrintFlag is the flag, given as --print-config, with which an operator asks
// a service to print its effective configuration and exit.
const PrintFlag = "print-config"

// PrintRequested reports whether args, the command-line arguments without
// the program name, ask for the configuration to be printed: --print-config
// or -print-config, optionally with =true or =false. Scanning stops at "--".
func PrintRequested(args []string) bool {
	requested := false
	for _, arg := range args {
		if arg == "--" {
			break
		}
		name, value, hasValue, ok := parseFlag(arg)
		if !ok || name != PrintFlag {
			continue
		}
		requested = true
		if hasValue {
			b, err := strconv.ParseBool(value)
			requested = err == nil && b
		}
	}
	return requested
}

// Print writes cfg, a config struct or a pointer to one, as YAML with the
// keys of its koanf tags in declaration order. Secrets print as [Redacted]
// and a [DSN] without its password; durations print as "15m0s", so the
// output can be fed back as a config file.
func Print(w io.Writer, cfg any) error {
	v := reflect.ValueOf(cfg)
	for v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return fmt.Errorf("config: Print needs a struct, got %T", cfg)
	}
	node, err := yamlNode(v)
	if err != nil {
		return fmt.Errorf("config: print: %w", err)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(node); err != nil {
		return fmt.Errorf("config: print: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("config: print: %w", err)
	}
	return nil
}

// yamlNode converts a value for printing. Anything that marshals itself to
// text does so, which is how Secret and DSN redact themselves.
func yamlNode(v reflect.Value) (*yaml.Node, error) {
	if !v.IsValid() {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	if v.Type() == reflect.TypeFor[time.Duration]() {
		return scalar(time.Duration(v.Int()).String())
	}
	if v.CanInterface() && v.Type().Implements(reflect.TypeFor[encoding.TextMarshaler]()) {
		if v.Kind() == reflect.Pointer && v.IsNil() {
			return yamlNode(reflect.Value{})
		}
		text, err := v.Interface().(encoding.TextMarshaler).MarshalText()
		if err != nil {
			return nil, err
		}
		return scalar(string(text))
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return yamlNode(reflect.Value{})
		}
		return yamlNode(v.Elem())
	case reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode}
		if err := appendFields(n, v); err != nil {
			return nil, err
		}
		return n, nil
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			return &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}, nil
		}
		n := &yaml.Node{Kind: yaml.SequenceNode}
		if v.Len() == 0 {
			n.Style = yaml.FlowStyle
		}
		for i := range v.Len() {
			c, err := yamlNode(v.Index(i))
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, c)
		}
		return n, nil
	case reflect.Map:
		n := &yaml.Node{Kind: yaml.MappingNode}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int {
			return strings.Compare(fmt.Sprint(a.Interface()), fmt.Sprint(b.Interface()))
		})
		for _, k := range keys {
			kn, err := yamlNode(k)
			if err != nil {
				return nil, err
			}
			vn, err := yamlNode(v.MapIndex(k))
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, kn, vn)
		}
		return n, nil
	}
	if !v.CanInterface() {
		return nil, fmt.Errorf("cannot print %s", v.Type())
	}
	n := &yaml.Node{}
	if err := n.Encode(v.Interface()); err != nil {
		return nil, err
	}
	return n, nil
}

func appendFields(n *yaml.Node, v reflect.Value) error {
	t := v.Type()
	for i := range t.NumField() {
		name, squash, ok := fieldKey(t.Field(i))
		if !ok {
			continue
		}
		if squash {
			if err := appendFields(n, v.Field(i)); err != nil {
				return err
			}
			continue
		}
		c, err := yamlNode(v.Field(i))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, c)
	}
	return nil
}

func scalar(s string) (*yaml.Node, error) {
	n := &yaml.Node{}
	if err := n.Encode(s); err != nil {
		return nil, err
	}
	return n, nil
}
