package auth_test

import (
	"context"
	"testing"
	"time"

	"portcullis.dev/authsvc/internal/auth"
	"portcullis.dev/authsvc/internal/authtest"
)

// BenchmarkRefresh measures Refresh end to end against PostgreSQL (row
// locks, rotation, the audit event in the same transaction, signing), with
// parallel clients each refreshing its own session, and reports
// refreshes/s. The target is at least 1,000/s on two cores.
func BenchmarkRefresh(b *testing.B) {
	e := authtest.New(b, authtest.Options{MaxOpenConns: 16})
	b.SetParallelism(4)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		p, err := e.Service.Login(ctx, auth.LoginInput{Email: authtest.ActiveEmail, Password: authtest.Password})
		if err != nil {
			b.Error(err)
			return
		}
		token := p.RefreshToken
		for pb.Next() {
			p, err := e.Service.Refresh(ctx, token)
			if err != nil {
				b.Error(err)
				return
			}
			token = p.RefreshToken
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "refreshes/s")
}
