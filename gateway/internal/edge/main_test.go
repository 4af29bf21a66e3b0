package edge_test

import (
	"os"
	"testing"
)

// TestMain runs the tests, or, started by [startForwarder], is the bare
// TCP forwarder the benchmark measures as the floor of any proxy.
func TestMain(m *testing.M) {
	if spec := os.Getenv(forwardEnv); spec != "" {
		forward(spec)
		return
	}
	os.Exit(m.Run())
}
