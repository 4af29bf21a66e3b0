package flows_test

import (
	"os"
	"testing"

	"portcullis.dev/e2e/platformtest"
)

// TestMain removes the binaries platformtest.Build made once for all the
// package's tests.
func TestMain(m *testing.M) { os.Exit(platformtest.Main(m)) }
