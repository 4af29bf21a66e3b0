// Package config loads a service's typed configuration from layered YAML and
// environment variables, validates it, and prints it with secrets redacted.
//
// # Layers
//
// [Load] decodes into a struct whose fields carry koanf tags. Nested structs
// are sections; every other field is a key. Later layers win:
//
//  1. the service's defaults, a YAML document embedded in the binary with
//     //go:embed config/default.yaml;
//  2. an optional YAML file, named by [WithFile], the --config flag in the
//     arguments, or the PORTCULLIS_CONFIG environment variable, in that
//     order;
//  3. environment variables PORTCULLIS_<SECTION>_<KEY>: the key
//     database.max_open_conns is set by PORTCULLIS_DATABASE_MAX_OPEN_CONNS.
//
// Because sections and keys themselves contain underscores, environment
// names are not split on underscores: each key of the target struct has
// exactly one name, and only those names are read. Other PORTCULLIS_*
// variables (PORTCULLIS_TEST_DATABASE_URL, ...) are left to their owners;
// [UnknownEnv] lists those that look like misspelled keys, for a warning.
// A list of strings is set from the environment as a comma-separated value.
//
// A YAML null ("key:" with nothing after it) means "not set here": the key
// keeps its value from the earlier layers, so a commented-out block in a file
// does not wipe the defaults.
//
// # Validation
//
// Every problem is reported, not just the first, as a [*KeyError] that names
// the key and the layer its value came from, joined with [errors.Join]:
// unknown keys in the defaults or a file, values of the wrong type, malformed
// durations ("15m" parses, "abc" and a bare 15 do not), and the rules
// declared with validate tags:
//
//	type Database struct {
//		DSN          config.DSN    `koanf:"dsn" validate:"required"`
//		MaxOpenConns int           `koanf:"max_open_conns" validate:"min=1,max=1000"`
//		ConnLifetime time.Duration `koanf:"conn_lifetime" validate:"min=1s"`
//		Mode         string        `koanf:"mode" validate:"oneof=primary replica"`
//	}
//
// The rules are:
//
//   - required: the value is not zero; a string is not blank; a slice or map
//     has an element, and a slice of strings has no blank element.
//   - min=N, max=N: bounds for integers, floats and durations (N is then a
//     duration such as 1s); for strings, slices and maps, bounds on the
//     length.
//   - oneof=a b c: the value, or every element of a slice of strings, is one
//     of the space-separated words. An empty string is not one of them.
//
// After the tags pass, a section or the whole config that implements
// [Validator] checks its cross-field rules.
//
// # Secrets
//
// Fields of type [Secret] and [DSN] print as [REDACTED] (a DSN hides only its
// password) through fmt, encoding/json, encoding.TextMarshaler, log/slog and
// [Print]; their Value method returns the real value.
package config
