package notify_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/karlmalone/karlmalone/notify"
)

// BenchmarkWebhookThroughput: notifications for distinct members (nothing
// coalesces) delivered to a gateway on loopback that answers 204 at once:
// the notifier's own ceiling (signing, JSON, HTTP) with the default workers.
func BenchmarkWebhookThroughput(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	w := notify.NewWebhook(notify.Config{URL: srv.URL, Secret: secret, QueueSize: b.N + 1}, client, nil)
	defer w.Close()
	b.ResetTimer()
	for i := range b.N {
		w.Notify(notify.Notification{MemberID: int64(i), Seq: 1})
	}
	for w.Stats().Delivered+w.Stats().Failed < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	if s := w.Stats(); s.Failed != 0 || s.Dropped != 0 {
		b.Fatalf("stats %+v", s)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "notifications/s")
}

// BenchmarkWebhookNotify: what Notify costs the send path.
func BenchmarkWebhookNotify(b *testing.B) {
	hold := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hold }))
	defer srv.Close()
	defer close(hold)
	w := notify.NewWebhook(notify.Config{URL: srv.URL, Secret: secret, QueueSize: 10_000}, nil, nil)
	defer w.Close()
	b.ResetTimer()
	for i := range b.N {
		w.Notify(notify.Notification{MemberID: int64(i % 20_000), Seq: int64(i)})
	}
}
