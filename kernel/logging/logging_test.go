package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/slogtest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/logging"
)

// lines decodes the JSON lines in buf.
func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(buf.String()) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), "line %q", line)
		out = append(out, m)
	}
	return out
}

func requestContext() context.Context {
	ctx := logging.WithRequestID(context.Background(), "req-1")
	ctx = logging.WithProcedure(ctx, "/portcullis.identity.v1.IdentityService/GetUser")
	return logging.WithPrincipal(ctx, "user", "u-42")
}

func TestJSONCarriesContextAttrs(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := logging.New(logging.Config{Format: logging.FormatJSON},
		logging.WithOutput(&buf), logging.WithService("identitysvc", "v0.3.0"))

	logger.InfoContext(requestContext(), "got user", "rows", 1)
	logger.Info("no context")

	got := lines(t, &buf)
	require.Len(t, got, 2)
	assert.Equal(t, "got user", got[0]["msg"])
	assert.Equal(t, "req-1", got[0][logging.RequestIDKey])
	assert.Equal(t, "/portcullis.identity.v1.IdentityService/GetUser", got[0][logging.ProcedureKey])
	assert.Equal(t, map[string]any{"kind": "user", "id": "u-42"}, got[0][logging.PrincipalKey])
	assert.Equal(t, "identitysvc", got[0][logging.ServiceKey])
	assert.Equal(t, "v0.3.0", got[0][logging.VersionKey])
	assert.InDelta(t, 1, got[0]["rows"], 0)

	assert.NotContains(t, got[1], logging.RequestIDKey)
	assert.Equal(t, "identitysvc", got[1][logging.ServiceKey])
}

// TestNoKeyTwice: a line that names a key its context carries too (the
// request ID, the procedure) carries it once: JSON with a repeated key is
// refused by some log stores and read differently by others.
func TestNoKeyTwice(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := logging.New(logging.Config{Format: logging.FormatJSON}, logging.WithOutput(&buf))
	logger.InfoContext(requestContext(), "request", logging.RequestIDKey, "req-1", "status", 200)
	raw := buf.String()
	assert.Equal(t, 1, strings.Count(raw, `"`+logging.RequestIDKey+`"`), raw)
	got := lines(t, &buf)
	require.Len(t, got, 1)
	assert.Equal(t, "req-1", got[0][logging.RequestIDKey])
	assert.InDelta(t, 200, got[0]["status"], 0)
}

func TestLevelFiltering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		level string
		want  []string
	}{
		{"debug", []string{"DEBUG", "INFO", "WARN", "ERROR"}},
		{"info", []string{"INFO", "WARN", "ERROR"}},
		{"", []string{"INFO", "WARN", "ERROR"}},
		{"warn", []string{"WARN", "ERROR"}},
		{"error", []string{"ERROR"}},
		{"nonsense", []string{"INFO", "WARN", "ERROR"}},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			logger := logging.New(logging.Config{Level: tt.level, Format: logging.FormatJSON}, logging.WithOutput(&buf))
			ctx := requestContext()
			logger.DebugContext(ctx, "m")
			logger.InfoContext(ctx, "m")
			logger.WarnContext(ctx, "m")
			logger.ErrorContext(ctx, "m")
			var levels []string
			for _, l := range lines(t, &buf) {
				levels = append(levels, l["level"].(string))
			}
			assert.Equal(t, tt.want, levels)
		})
	}
}

func TestFormatSelection(t *testing.T) {
	t.Parallel()
	file := func(t *testing.T) *os.File {
		f, err := os.Create(filepath.Join(t.TempDir(), "log"))
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close() })
		return f
	}
	tests := []struct {
		name     string
		format   logging.Format
		output   func(t *testing.T) *os.File // nil: a bytes.Buffer
		wantJSON bool
	}{
		{name: "auto to a buffer", format: logging.FormatAuto, wantJSON: true},
		{name: "empty to a buffer", format: "", wantJSON: true},
		{name: "auto to a file", format: logging.FormatAuto, output: file, wantJSON: true},
		{name: "json", format: logging.FormatJSON, wantJSON: true},
		{name: "text to a buffer", format: logging.FormatText},
		{name: "text to a file", format: logging.FormatText, output: file},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			opt := logging.WithOutput(&buf)
			var f *os.File
			if tt.output != nil {
				f = tt.output(t)
				opt = logging.WithOutput(f)
			}
			logging.New(logging.Config{Format: tt.format}, opt).InfoContext(requestContext(), "hello", "k", "v")
			out := buf.String()
			if f != nil {
				b, err := os.ReadFile(f.Name())
				require.NoError(t, err)
				out = string(b)
			}
			if tt.wantJSON {
				assert.True(t, json.Valid([]byte(out)), "want JSON, got %q", out)
				return
			}
			assert.False(t, json.Valid([]byte(out)), "want text, got %q", out)
			assert.Contains(t, out, "INF hello")
			assert.Contains(t, out, "request_id=req-1")
			assert.Contains(t, out, "principal.kind=user")
			assert.NotContains(t, out, "\x1b[", "no colour when the output is not a terminal")
		})
	}
}

func TestContextAttrsSurviveWithAndWithGroup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		logger func(*slog.Logger) *slog.Logger
		want   map[string]any // without time, level and msg
	}{
		{
			name:   "plain",
			logger: func(l *slog.Logger) *slog.Logger { return l },
			want:   map[string]any{"request_id": "req-1", "k": "v"},
		},
		{
			name:   "With",
			logger: func(l *slog.Logger) *slog.Logger { return l.With("a", "1") },
			want:   map[string]any{"request_id": "req-1", "a": "1", "k": "v"},
		},
		{
			name:   "WithGroup",
			logger: func(l *slog.Logger) *slog.Logger { return l.WithGroup("g") },
			want:   map[string]any{"request_id": "req-1", "g": map[string]any{"k": "v"}},
		},
		{
			name: "With, WithGroup, With, WithGroup",
			logger: func(l *slog.Logger) *slog.Logger {
				return l.With("a", "1").WithGroup("g").With("b", "2").WithGroup("h")
			},
			want: map[string]any{
				"request_id": "req-1", "a": "1",
				"g": map[string]any{"b": "2", "h": map[string]any{"k": "v"}},
			},
		},
		{
			name:   "empty group name is no group",
			logger: func(l *slog.Logger) *slog.Logger { return l.WithGroup("").With("a", "1") },
			want:   map[string]any{"request_id": "req-1", "a": "1", "k": "v"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			base := logging.New(logging.Config{Format: logging.FormatJSON}, logging.WithOutput(&buf))
			logger := tt.logger(base)
			ctx := logging.WithRequestID(context.Background(), "req-1")

			logger.InfoContext(ctx, "m", "k", "v")
			logger.InfoContext(ctx, "m", "k", "v") // the derived handler is reusable

			for _, got := range lines(t, &buf) {
				delete(got, "time")
				delete(got, "level")
				delete(got, "msg")
				assert.Equal(t, tt.want, got)
			}
		})
	}
}

// TestGroupedLoggerManyContexts logs through one grouped logger from many
// goroutines, each with its own context, and checks that no line carries
// another's request ID.
func TestGroupedLoggerManyContexts(t *testing.T) {
	t.Parallel()
	var buf safeBuffer
	logger := logging.New(logging.Config{Format: logging.FormatJSON}, logging.WithOutput(&buf)).WithGroup("g")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			ctx := logging.WithRequestID(context.Background(), strconv.Itoa(i))
			for range 50 {
				logger.InfoContext(ctx, "m", "n", strconv.Itoa(i))
			}
		})
	}
	wg.Wait()
	got := lines(t, &buf.Buffer)
	require.Len(t, got, 400)
	for _, l := range got {
		assert.Equal(t, l["g"].(map[string]any)["n"], l["request_id"])
	}
}

type safeBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func TestWithAttrsReplacesKeys(t *testing.T) {
	t.Parallel()
	parent := logging.WithRequestID(context.Background(), "first")
	child := logging.WithRequestID(parent, "second")
	child = logging.WithAttrs(child, slog.String("tenant", "a"), slog.String("tenant", "b"))

	assert.Equal(t, "first", logging.RequestID(parent))
	assert.Equal(t, "second", logging.RequestID(child))

	var buf bytes.Buffer
	logging.New(logging.Config{Format: logging.FormatJSON}, logging.WithOutput(&buf)).InfoContext(child, "m")
	out := buf.String()
	assert.Equal(t, 1, strings.Count(out, `"request_id"`), out)
	assert.Equal(t, 1, strings.Count(out, `"tenant"`), out)
	assert.Contains(t, out, `"tenant":"b"`)
}

func TestGetters(t *testing.T) {
	t.Parallel()
	empty := context.Background()
	assert.Empty(t, logging.RequestID(empty))
	assert.Empty(t, logging.Procedure(empty))
	kind, id := logging.Principal(empty)
	assert.Empty(t, kind)
	assert.Empty(t, id)
	assert.Equal(t, empty, logging.WithAttrs(empty))

	ctx := requestContext()
	assert.Equal(t, "req-1", logging.RequestID(ctx))
	assert.Equal(t, "/portcullis.identity.v1.IdentityService/GetUser", logging.Procedure(ctx))
	kind, id = logging.Principal(ctx)
	assert.Equal(t, "user", kind)
	assert.Equal(t, "u-42", id)
}

// TestHandlerContract runs the standard library's conformance tests for
// slog.Handler against the handler New builds.
func TestHandlerContract(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	slogtest.Run(t,
		func(t *testing.T) slog.Handler {
			buf.Reset()
			return logging.New(logging.Config{Format: logging.FormatJSON}, logging.WithOutput(&buf)).Handler()
		},
		func(t *testing.T) map[string]any {
			var m map[string]any
			require.NoError(t, json.Unmarshal(buf.Bytes(), &m))
			return m
		})
}

func TestDiscard(t *testing.T) {
	t.Parallel()
	l := logging.OrDiscard(nil)
	require.NotNil(t, l)
	assert.False(t, l.Enabled(context.Background(), slog.LevelError))
	l.ErrorContext(requestContext(), "dropped")

	own := logging.New(logging.Config{}, logging.WithOutput(&bytes.Buffer{}))
	assert.Same(t, own, logging.OrDiscard(own))
	assert.False(t, logging.New(logging.Config{}, logging.WithOutput(nil)).Enabled(context.Background(), slog.LevelError))
}
