package config

import (
	"context"
	"log/slog"
	"reflect"
	"slices"
	"strings"
)

// UnknownEnv returns, sorted, the names in environ ("NAME=value" entries,
// as [os.Environ] gives them) that look meant for a config of type T but
// set none of its keys: PORTCULLIS_<SECTION>_... for a top-level section T
// has, other than one of its keys' names. A misspelled key
// (PORTCULLIS_DATABASE_MAXOPENCONNS) is one; [Load] cannot tell it from a
// variable of another program, and leaves it alone. Names under sections T
// lacks belong to the other services an environment is shared with, and
// are not reported. A T that cannot describe a configuration has none.
func UnknownEnv[T any](environ []string) []string {
	s, err := newSchema(reflect.TypeFor[T]())
	if err != nil {
		return nil
	}
	known := make(map[string]bool, len(s.leaves))
	for _, lf := range s.leaves {
		known[lf.env] = true
	}
	var prefixes []string
	for key := range s.sections {
		if !strings.Contains(key, ".") {
			prefixes = append(prefixes, envName(key)+"_")
		}
	}
	var unknown []string
	for _, entry := range environ {
		name, _, _ := strings.Cut(entry, "=")
		if known[name] || slices.Contains(unknown, name) {
			continue
		}
		if slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	return unknown
}

// WarnUnknownEnv logs each of [UnknownEnv]'s names at WARN, so that a
// setting that did not take is not silent. A service calls it once its
// logger is up.
func WarnUnknownEnv[T any](ctx context.Context, logger *slog.Logger, environ []string) {
	for _, name := range UnknownEnv[T](environ) {
		logger.WarnContext(ctx, "environment variable sets no configuration key and is ignored; is it misspelled?", "variable", name)
	}
}
