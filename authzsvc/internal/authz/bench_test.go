package authz_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"portcullis.dev/authzsvc/internal/authz"
	authzv1 "portcullis.dev/proto/authz/v1"
)

// benchReplica is a replica with a subject bound to a few roles, so the
// index has exact, wildcard and scoped grants to look through.
func benchReplica(b *testing.B) *replica {
	r := newReplica(b)
	for i, perms := range [][]string{
		{"identity.users.read", "identity.users.write"},
		{"audit.*"},
		{"auth.sessions.*", "auth.keys.rotate"},
	} {
		role := r.mustRole(b, fmt.Sprintf("bench-%d", i), perms...)
		r.mustAssign(b, "bench-user", role, "")
		r.mustAssign(b, "bench-user", role, "org:acme")
	}
	r.prime(b, "bench-user", "identity.users.read", true)
	return r
}

// BenchmarkCheckCached is the in-process cost of a decision from the index
// (target: under 1µs, no allocation).
func BenchmarkCheckCached(b *testing.B) {
	r := benchReplica(b)
	ctx := context.Background()
	qs := []authz.Question{
		{Subject: "bench-user", Permission: "identity.users.read"},                     // exact
		{Subject: "bench-user", Permission: "audit.events.export"},                     // wildcard
		{Subject: "bench-user", Permission: "authz.roles.write", Resource: "org:acme"}, // denied, scoped
	}
	b.ReportAllocs()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := r.Check(ctx, qs[i%len(qs)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if _, err := r.Check(ctx, qs[i%len(qs)]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkCheckUncached is a decision read from the database, as a replica
// without its notification connection answers.
func BenchmarkCheckUncached(b *testing.B) {
	r := benchReplica(b)
	// The same schema, without Run: never live, so never cached.
	cold, err := authz.New(r.db.Ent, r.db.Schema, "", authz.Config{})
	require.NoError(b, err)
	ctx := context.Background()
	q := authz.Question{Subject: "bench-user", Permission: "audit.events.export", Resource: "org:acme"}
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := cold.Check(ctx, q); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkCheckOverConnect compares Check over Connect on loopback, with a
// service token, with grpc.health.v1.Health/Check on the same server
// through the same transport, in alternating batches so that drift on the
// machine hits both alike. The ratio is the figure of merit (target: under
// 1.3x): what Check adds to the cheapest call the server answers.
func BenchmarkCheckOverConnect(b *testing.B) {
	r := benchReplica(b)
	s := startServer(b, r, nil)
	ctx := context.Background()
	check := s.asService(b)
	// The health request and response are one string and one enum field
	// 1; StringValue and Int32Value have the same wire form, which spares
	// a dependency on grpc-go for its generated types.
	health := connect.NewClient[wrapperspb.StringValue, wrapperspb.Int32Value](h2c(), s.url+"/grpc.health.v1.Health/Check")

	callCheck := func() {
		resp, err := check.Check(ctx, connect.NewRequest(&authzv1.CheckRequest{Subject: "bench-user", Permission: "audit.events.export"}))
		if err != nil || !resp.Msg.GetAllowed() {
			b.Fatal(resp, err)
		}
	}
	callHealth := func() {
		resp, err := health.CallUnary(ctx, connect.NewRequest(wrapperspb.String("")))
		if err != nil || resp.Msg.GetValue() != 1 { // SERVING
			b.Fatal(resp, err)
		}
	}
	for range 200 { // warm the connections and the token caches
		callCheck()
		callHealth()
	}
	const batch = 50
	var checkTime, healthTime time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		n := min(batch, b.N-done)
		start := time.Now()
		for range n {
			callHealth()
		}
		healthTime += time.Since(start)
		start = time.Now()
		for range n {
			callCheck()
		}
		checkTime += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(healthTime.Nanoseconds())/float64(b.N), "health-ns/call")
	b.ReportMetric(float64(checkTime.Nanoseconds())/float64(b.N), "check-ns/call")
	b.ReportMetric(float64(checkTime)/float64(healthTime), "x-vs-health")
}
