package identity_test

import (
	"crypto/rand"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"portcullis.dev/identitysvc/internal/identity"
)

// BenchmarkVerifyCredentials compares a whole VerifyCredentials (database
// lookup, argon2id check) with a bare argon2id hash of the same parameters
// — OWASP's, the service's defaults — in alternating batches of one run.
// The ratio is the figure of merit (target: under 1.15x).
func BenchmarkVerifyCredentials(b *testing.B) {
	params := identity.Argon2Params{MemoryKiB: 19456, Iterations: 2, Parallelism: 1}
	f := newBenchFixture(b, params)
	ctx := b.Context()
	if _, err := f.svc.CreateUser(ctx, "bench@example.com", "correct horse battery", ""); err != nil {
		b.Fatal(err)
	}
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	var bare, full time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		_ = argon2.IDKey([]byte("correct horse battery"), salt, params.Iterations, params.MemoryKiB, params.Parallelism, 32)
		bare += time.Since(start)
		start = time.Now()
		if _, err := f.svc.VerifyCredentials(ctx, "bench@example.com", "correct horse battery"); err != nil {
			b.Fatal(err)
		}
		full += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(bare.Microseconds())/float64(b.N), "argon2id-µs")
	b.ReportMetric(float64(full.Microseconds())/float64(b.N), "verify-µs")
	b.ReportMetric(float64(full)/float64(bare), "x-vs-argon2id")
}

// BenchmarkGetUser is the latency of reading one user by ID.
func BenchmarkGetUser(b *testing.B) {
	f := newBenchFixture(b, identity.Argon2Params{MemoryKiB: 1024, Iterations: 1, Parallelism: 1})
	u, err := f.svc.CreateUser(b.Context(), "get@example.com", "correct horse battery", "")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := f.svc.GetUser(b.Context(), u.ID); err != nil {
			b.Fatal(err)
		}
	}
}
