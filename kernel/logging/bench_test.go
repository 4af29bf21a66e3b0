package logging_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"portcullis.dev/kernel/logging"
)

// BenchmarkContextHandler measures logging a line whose request attributes
// come from the context, through the logger New builds, against the
// baseline of the bare JSON handler given the same attributes at the call
// site, measured in the same run. It reports the ratio as x-baseline.
func BenchmarkContextHandler(b *testing.B) {
	ctx := logging.WithRequestID(context.Background(), "01J9ZQ3V")
	ctx = logging.WithProcedure(ctx, "/portcullis.identity.v1.IdentityService/GetUser")
	bare := slog.New(slog.NewJSONHandler(io.Discard, nil))
	wrapped := logging.New(logging.Config{Format: logging.FormatJSON}, logging.WithOutput(io.Discard))

	b.Run("plain", func(b *testing.B) {
		benchmarkRatio(b,
			func() {
				bare.InfoContext(ctx, "user loaded", "rows", 1,
					logging.RequestIDKey, "01J9ZQ3V", logging.ProcedureKey, "/portcullis.identity.v1.IdentityService/GetUser")
			},
			func() { wrapped.InfoContext(ctx, "user loaded", "rows", 1) })
	})
	// With a group the handler rebuilds its chain per record; this shows
	// what that costs.
	b.Run("group", func(b *testing.B) {
		bareGroup := bare.With(logging.RequestIDKey, "01J9ZQ3V", logging.ProcedureKey, "/portcullis.identity.v1.IdentityService/GetUser").WithGroup("db")
		wrappedGroup := wrapped.WithGroup("db")
		benchmarkRatio(b,
			func() { bareGroup.InfoContext(ctx, "user loaded", "rows", 1) },
			func() { wrappedGroup.InfoContext(ctx, "user loaded", "rows", 1) })
	})
}

// benchmarkRatio times measured as the benchmark and baseline b.N times
// beside it, and reports the ratio of the two.
func benchmarkRatio(b *testing.B, baseline, measured func()) {
	b.ReportAllocs()
	b.StopTimer()
	start := time.Now()
	for range b.N {
		baseline()
	}
	base := time.Since(start)
	b.StartTimer()
	for range b.N {
		measured()
	}
	b.StopTimer()
	if base > 0 {
		b.ReportMetric(float64(b.Elapsed())/float64(base), "x-baseline")
	}
}
