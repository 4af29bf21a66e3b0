// Package kerneltest gives tests the real parts they run against — a
// PostgreSQL database with a schema of their own, a Consul binary — from one
// place, so every module finds them the same way.
//
// Outside CI a test whose real part is missing is skipped with a message
// saying how to provide it. With CI=true it fails instead: CI must never pass
// by skipping.
package kerneltest

import (
	"cmp"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// DefaultDatabaseURL is the PostgreSQL that tests use when
// PORTCULLIS_TEST_DATABASE_URL is not set.
const DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// DatabaseURL returns PORTCULLIS_TEST_DATABASE_URL, or [DefaultDatabaseURL].
func DatabaseURL() string {
	return cmp.Or(os.Getenv("PORTCULLIS_TEST_DATABASE_URL"), DefaultDatabaseURL)
}

// InCI reports whether the tests run in CI (CI=true), where a missing real
// part is a failure rather than a reason to skip.
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// Unavailable stops the test because a real part it needs is missing: a
// skip on a developer's machine, a failure in CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true and a required service is unavailable: "+format, args...)
	}
	t.Skipf("skipped, required service unavailable: "+format, args...)
}

// ConsulBinary returns the path of the consul binary on PATH; `go tool task
// test` puts the one built from tools/consul there.
func ConsulBinary(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("consul")
	if err != nil {
		Unavailable(t, "no consul binary on PATH (run the tests with `go tool task test`, which builds it into bin/): %v", err)
	}
	return path
}
