package logging

import (
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"
	"golang.org/x/term"
)

// Format selects how log lines are written.
type Format string

// The formats of [Config.Format].
const (
	// FormatAuto writes [FormatText] to a terminal and [FormatJSON] to
	// anything else (a pipe, a file, a log collector).
	FormatAuto Format = "auto"
	// FormatJSON writes one JSON object per line, as [slog.JSONHandler].
	FormatJSON Format = "json"
	// FormatText writes human-readable lines with a short level and the
	// attributes as key=value, coloured when the output is a terminal.
	FormatText Format = "text"
)

// Config is what an operator configures about logging, usually as the
// logging section of a service's configuration. The zero Config logs at
// info level in the auto format; a service's defaults YAML should still set
// both keys, because config validation rejects empty values.
type Config struct {
	// Level is the least severe level written: debug, info, warn or error.
	Level string `koanf:"level" validate:"oneof=debug info warn error"`
	// Format is auto, json or text; see [FormatAuto].
	Format Format `koanf:"format" validate:"oneof=auto json text"`
	// FlushInterval, when positive, gathers lines and writes them together,
	// at most this long after the first of them, rather than one write
	// system call per line: a line per request then costs a service far
	// less CPU. Lines at warn level and above are written at once, with
	// those before them, and [Flush] writes the rest before the process
	// exits; a crash loses at most this long of lines at info and below.
	// Zero writes every line as it comes, as does a terminal.
	FlushInterval time.Duration `koanf:"flush_interval" validate:"min=0s"`
}

// The keys of the attributes [WithService] adds.
const (
	ServiceKey = "service"
	VersionKey = "version"
)

// Option configures [New].
type Option func(*options)

type options struct {
	output io.Writer
	attrs  []slog.Attr
}

// WithOutput sets where log lines go. The default is os.Stderr; a nil w
// discards.
func WithOutput(w io.Writer) Option {
	return func(o *options) { o.output = w }
}

// WithService adds the service's name and version to every line, under
// [ServiceKey] and [VersionKey]. An empty version is left out.
func WithService(name, version string) Option {
	return func(o *options) {
		o.attrs = append(o.attrs, slog.String(ServiceKey, name))
		if version != "" {
			o.attrs = append(o.attrs, slog.String(VersionKey, version))
		}
	}
}

// New returns a logger configured by cfg whose records logged with a
// context carry that context's attributes (see [WithAttrs]).
//
// New does not validate cfg: an empty or unknown level means info and an
// empty or unknown format means auto. Load cfg with kernel/config to have
// bad values rejected at start-up. Colour is left out when the NO_COLOR
// environment variable is set (https://no-color.org).
func New(cfg Config, opts ...Option) *slog.Logger {
	o := options{output: os.Stderr}
	for _, opt := range opts {
		opt(&o)
	}
	if o.output == nil {
		return Discard()
	}

	var level slog.Level // info
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		level = slog.LevelInfo
	}

	terminal := isTerminal(o.output)
	var buffer *lineBuffer
	if cfg.FlushInterval > 0 && !terminal {
		buffer = newLineBuffer(o.output, cfg.FlushInterval)
		o.output = buffer
	}
	format := cfg.Format
	if format != FormatJSON && format != FormatText {
		format = FormatJSON
		if terminal {
			format = FormatText
		}
	}

	var h slog.Handler
	switch format {
	case FormatText:
		timeFormat := "2006-01-02T15:04:05.000Z07:00"
		if terminal {
			// A person watching a terminal knows the date.
			timeFormat = "15:04:05.000"
		}
		h = tint.NewTextHandler(o.output, &tint.Options{
			Level:      level,
			TimeFormat: timeFormat,
			NoColor:    !terminal || os.Getenv("NO_COLOR") != "",
		})
	default:
		h = slog.NewJSONHandler(o.output, &slog.HandlerOptions{Level: level})
	}
	h = newContextHandler(h, buffer)
	if len(o.attrs) > 0 {
		h = h.WithAttrs(o.attrs)
	}
	return slog.New(h)
}

// Flush writes the lines a logger from [New] holds back (see
// [Config.FlushInterval]); it does nothing for any other logger. Call it
// before the process exits.
func Flush(l *slog.Logger) error {
	if h, ok := l.Handler().(*contextHandler); ok && h.buffer != nil {
		return h.buffer.Flush()
	}
	return nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Discard returns a logger that writes nothing and whose Enabled reports
// false, so callers skip building records.
func Discard() *slog.Logger {
	return slog.New(slog.DiscardHandler)
}

// OrDiscard returns l, or [Discard]() if l is nil. Kernel packages call it
// on the logger they are given, which is how "a nil logger discards" holds.
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return Discard()
	}
	return l
}
