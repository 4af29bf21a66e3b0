package logging_test

import (
	"context"
	"io"
	"os"
	"regexp"

	"portcullis.dev/kernel/logging"
)

func ExampleNew() {
	logger := logging.New(
		logging.Config{Level: "info", Format: logging.FormatJSON},
		logging.WithOutput(withoutTime{os.Stdout}), // a service keeps the default, os.Stderr
		logging.WithService("identitysvc", "v0.3.0"),
	)

	// Middleware puts the request's attributes in its context ...
	ctx := logging.WithRequestID(context.Background(), "01J9ZQ3V")
	ctx = logging.WithPrincipal(ctx, "user", "u-42")

	// ... and every line logged with that context carries them.
	logger.WithGroup("db").InfoContext(ctx, "user loaded", "rows", 1)
	logger.DebugContext(ctx, "not written at info level")
	// Output:
	// {"level":"INFO","msg":"user loaded","service":"identitysvc","version":"v0.3.0","request_id":"01J9ZQ3V","principal":{"kind":"user","id":"u-42"},"db":{"rows":1}}
}

// withoutTime drops the time from JSON lines, so the example's output is
// the same in every run.
type withoutTime struct{ w io.Writer }

func (w withoutTime) Write(p []byte) (int, error) {
	_, err := w.w.Write(regexp.MustCompile(`"time":"[^"]*",`).ReplaceAll(p, nil))
	return len(p), err
}
