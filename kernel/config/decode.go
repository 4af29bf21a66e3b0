package config

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// decodeLeaf decodes one raw value from the merged layers into the field dst.
// It returns one message per problem, each with the part of the key below
// dst it concerns ("" for dst itself, "[1].host" inside a list).
func decodeLeaf(raw any, dst reflect.Value) []keyMessage {
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook:  decodeHook,
		ErrorUnused: true,
		Squash:      true,
		TagName:     "koanf",
		Result:      dst.Addr().Interface(),
	})
	if err != nil {
		return []keyMessage{{msg: err.Error()}}
	}
	if err := dec.Decode(raw); err != nil {
		var out []keyMessage
		flattenDecodeError(err, "", &out)
		return out
	}
	return nil
}

// keyMessage is a problem found below a key, before the key and its source
// are known.
type keyMessage struct {
	sub string
	msg string
}

func flattenDecodeError(err error, sub string, out *[]keyMessage) {
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		for _, inner := range e.Unwrap() {
			flattenDecodeError(inner, sub, out)
		}
	case *mapstructure.DecodeError:
		inner := e.Unwrap()
		if _, ok := inner.(interface{ Unwrap() []error }); ok {
			// Nested errors carry their full names already.
			flattenDecodeError(inner, sub, out)
			return
		}
		name := e.Name()
		if name != "" && !strings.HasPrefix(name, "[") {
			name = "." + name
		}
		*out = append(*out, keyMessage{sub: name, msg: describeDecodeError(inner)})
	case interface{ Unwrap() error }:
		// mapstructure wraps everything in "decoding failed due to ...".
		if inner := e.Unwrap(); inner != nil {
			flattenDecodeError(inner, sub, out)
			return
		}
		*out = append(*out, keyMessage{sub: sub, msg: err.Error()})
	default:
		*out = append(*out, keyMessage{sub: sub, msg: err.Error()})
	}
}

// describeDecodeError turns mapstructure's errors into messages for
// operators. They name types and never values, which may be secrets.
func describeDecodeError(err error) string {
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("expected %s, got %s", typeName(pe.Expected.Type()), yamlKind(pe.Value))
	}
	var ue *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ue) {
		return fmt.Sprintf("expected %s, got %s", typeName(ue.Expected.Type()), yamlKind(ue.Value))
	}
	return err.Error()
}

// typeName describes a Go type in the words of YAML.
func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "a duration such as \"15m\""
	case t == reflect.TypeFor[Secret](), t == reflect.TypeFor[DSN]():
		return "a string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

// yamlKind describes a decoded YAML value without showing it.
func yamlKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return "an integer"
	case float32, float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

// decodeHook converts the values YAML and the environment produce into the
// field types mapstructure does not convert strictly by itself: strings from
// the environment into numbers, booleans, durations and lists; strings into
// types that unmarshal text. It refuses what mapstructure would accept
// silently: a fraction or an out-of-range number for an integer, and a
// duration without a unit.
func decodeHook(from, to reflect.Value) (any, error) {
	if !from.IsValid() || !from.CanInterface() {
		return nil, nil
	}
	data := from.Interface()
	tt := to.Type()
	s, isString := data.(string)

	if isString && tt.Kind() != reflect.String && reflect.PointerTo(tt).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) {
		v := reflect.New(tt)
		if err := v.Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			return nil, err
		}
		return v.Elem().Interface(), nil
	}

	if tt == reflect.TypeFor[time.Duration]() {
		return decodeDuration(data)
	}

	switch tt.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return decodeInt(data, tt)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return decodeUint(data, tt)
	case reflect.Float32, reflect.Float64:
		if isString {
			f, err := strconv.ParseFloat(strings.TrimSpace(s), tt.Bits())
			if err != nil {
				return nil, fmt.Errorf("expected a number, got %q", s)
			}
			return f, nil
		}
	case reflect.Bool:
		if isString {
			b, err := strconv.ParseBool(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("expected true or false, got %q", s)
			}
			return b, nil
		}
	case reflect.Slice:
		if isString && tt.Elem().Kind() == reflect.String {
			// A list from the environment: "a, b,c".
			out := []string{}
			for part := range strings.SplitSeq(s, ",") {
				if part = strings.TrimSpace(part); part != "" {
					out = append(out, part)
				}
			}
			return out, nil
		}
	}
	return data, nil
}

func decodeDuration(data any) (any, error) {
	switch v := data.(type) {
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("invalid duration %q: use a number with a unit, such as \"15m\" or \"500ms\"", v)
		}
		return d, nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		if reflect.ValueOf(v).IsZero() {
			return time.Duration(0), nil
		}
		// A bare 30 would be 30ns: almost certainly not what was meant.
		return nil, fmt.Errorf("duration %v has no unit: write it as a string such as \"%vs\"", v, v)
	case time.Duration:
		return v, nil
	}
	return data, nil
}

func decodeInt(data any, tt reflect.Type) (any, error) {
	var i int64
	switch v := data.(type) {
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("expected an integer, got %q", v)
		}
		i = n
	case float64, float32:
		f := reflect.ValueOf(v).Float()
		if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
			return nil, fmt.Errorf("expected an integer, got %v", f)
		}
		i = int64(f)
	case int, int8, int16, int32, int64:
		i = reflect.ValueOf(v).Int()
	case uint, uint8, uint16, uint32, uint64:
		u := reflect.ValueOf(v).Uint()
		if u > math.MaxInt64 {
			return nil, fmt.Errorf("%d is out of range", u)
		}
		i = int64(u)
	default:
		return data, nil
	}
	if reflect.New(tt).Elem().OverflowInt(i) {
		return nil, fmt.Errorf("%d is out of range for %s", i, tt)
	}
	return reflect.ValueOf(i).Convert(tt).Interface(), nil
}

func decodeUint(data any, tt reflect.Type) (any, error) {
	var u uint64
	switch v := data.(type) {
	case string:
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("expected a non-negative integer, got %q", v)
		}
		u = n
	case float64, float32:
		f := reflect.ValueOf(v).Float()
		if f != math.Trunc(f) || f < 0 || f >= math.MaxUint64 {
			return nil, fmt.Errorf("expected a non-negative integer, got %v", f)
		}
		u = uint64(f)
	case int, int8, int16, int32, int64:
		i := reflect.ValueOf(v).Int()
		if i < 0 {
			return nil, fmt.Errorf("expected a non-negative integer, got %d", i)
		}
		u = uint64(i)
	case uint, uint8, uint16, uint32, uint64:
		u = reflect.ValueOf(v).Uint()
	default:
		return data, nil
	}
	if reflect.New(tt).Elem().OverflowUint(u) {
		return nil, fmt.Errorf("%d is out of range for %s", u, tt)
	}
	return reflect.ValueOf(u).Convert(tt).Interface(), nil
}
