package keys

import (
	"crypto/ed25519"
	"testing"
	"time"
)

// BenchmarkSign measures signing an access token against the baseline of
// a bare ed25519.Sign of an input of the same size, measured in the same
// run, and reports the ratio as x-vs-raw-sig (target: under 2).
func BenchmarkSign(b *testing.B) {
	k, _, err := generateKey(AlgEdDSA, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	claims := &Claims{
		Issuer: "portcullis", Subject: "11111111-1111-4111-8111-111111111111", Audience: "portcullis",
		IssuedAt: now.Unix(), NotBefore: now.Unix(), ExpiresAt: now.Add(15 * time.Minute).Unix(),
		ID: "Zm9vYmFyYmF6cXV4cXV1eA", SessionID: "0b7c7c1e-9a43-4b1e-8d2c-7f8c1e0d4b5a",
	}
	token, err := k.Sign(claims)
	if err != nil {
		b.Fatal(err)
	}
	input := []byte(token[:len(token)-87]) // the signing input, without "." and the signature
	priv := k.signer.(ed25519.PrivateKey)

	const baselineRuns = 5000
	b.ReportAllocs()
	b.StopTimer()
	begin := time.Now()
	for range baselineRuns {
		ed25519.Sign(priv, input)
	}
	base := time.Since(begin) / baselineRuns
	b.StartTimer()
	for b.Loop() {
		if _, err := k.Sign(claims); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(base), "x-vs-raw-sig")
}
