package server_test

import (
	"context"
	"testing"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/internal/password"
)

// BenchmarkLogin is logins/s through the real server (Connect over HTTP/1.1,
// PostgreSQL) with production argon2id parameters and the default bound of
// GOMAXPROCS hashes at once; clients run 4×GOMAXPROCS in parallel, so the
// bound is what queues them.
//
//	go test -run '^$' -bench Login -benchtime 200x ./server/
func BenchmarkLogin(b *testing.B) {
	e := newEnv(b, withHasher(password.NewHasher(password.DefaultParams, 0)))
	m := e.register(b, "bench")
	anon := e.clients("")
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := anon.Members.Login(context.Background(), &v1.LoginRequest{Phone: m.Phone, Password: m.Password}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
}
