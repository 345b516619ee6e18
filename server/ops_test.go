package server_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/internal/testdb"
	"github.com/karlmalone/karlmalone/push"
	"github.com/karlmalone/karlmalone/server"
)

func TestHealthzReadyz(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	e := newEnv(t, withPool(pool))
	for _, path := range []string{"/healthz", "/readyz"} {
		res := attDo(t, e.H1, "GET", e.URL+path, "", nil, nil)
		if b, _ := io.ReadAll(res.Body); res.StatusCode != 200 || strings.TrimSpace(string(b)) != "ok" {
			t.Fatalf("%s: %s %q", path, res.Status, b)
		}
	}
	// Without its database the process is alive but not ready.
	pool.Close()
	if res := attDo(t, e.H1, "GET", e.URL+"/readyz", "", nil, nil); res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without a database: %s, want 503", res.Status)
	}
	if res := attDo(t, e.H1, "GET", e.URL+"/healthz", "", nil, nil); res.StatusCode != 200 {
		t.Fatalf("/healthz without a database: %s, want 200", res.Status)
	}
}

// scrape reads /metrics and returns the families by name.
func scrape(t testing.TB, e *env) map[string]*dto.MetricFamily {
	t.Helper()
	res := attDo(t, e.H1, "GET", e.URL+"/metrics", "", nil, nil)
	if res.StatusCode != 200 {
		t.Fatalf("/metrics: %s", res.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue is the value of the series of family name whose labels include
// labels (name=value pairs); -1 when there is no such series.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}) {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	other := newEnv(t) // a second server in the same process
	ann, bob := e.register(t, "ann"), e.register(t, "bob")
	makeContacts(t, ann, bob)

	before := scrape(t, e)
	for _, name := range []string{"karlmalone_push_connections", "karlmalone_push_events_published_total",
		"karlmalone_push_events_delivered_total", "karlmalone_push_events_dropped_total",
		"karlmalone_push_slow_consumer_disconnects_total", "karlmalone_db_pool_max_conns",
		"karlmalone_db_pool_acquires_total", "go_goroutines"} {
		if metricValue(before, name) < 0 {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if metricValue(before, "karlmalone_push_connections") != 0 {
		t.Fatalf("push connections before any: %v", metricValue(before, "karlmalone_push_connections"))
	}

	ev := e.connect(t, bob)
	sub, err := bob.Chat.Subscribe(t.Context(), &v1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	// The stream is registered once the hub counts it.
	waitFor(t, "subscription registered", func() bool { return e.Hub.Stats().Subscriptions == 1 })

	chatSend(t, ann, peerText(bob.ID, "m1", "hello"))
	ev.nextWhere(isMessage)
	if !sub.Receive() {
		t.Fatalf("subscription: %v", sub.Err())
	}
	_, err = e.clients("").Members.GetMe(t.Context(), &v1.GetMeRequest{})
	wantCode(t, err, connect.CodeUnauthenticated)

	// The socket write is counted just after it completes.
	waitFor(t, "push delivered counted", func() bool {
		return metricValue(scrape(t, e), "karlmalone_push_events_delivered_total") >= metricValue(before, "karlmalone_push_events_delivered_total")+2
	})
	after := scrape(t, e)
	send := karlmalonev1connect.ChatServiceSendMessageProcedure
	for _, tc := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"karlmalone_rpc_handled_total", []string{"procedure", send, "code", "ok"}, 1},
		{"karlmalone_rpc_duration_seconds", []string{"procedure", send}, 1},
		{"karlmalone_rpc_handled_total", []string{"procedure", karlmalonev1connect.MemberServiceGetMeProcedure, "code", "unauthenticated"}, 1},
		{"karlmalone_push_events_published_total", nil, 1},
	} {
		b := max(metricValue(before, tc.name, tc.labels...), 0)
		if got := metricValue(after, tc.name, tc.labels...) - b; got != tc.delta {
			t.Errorf("%s%v moved by %v, want %v", tc.name, tc.labels, got, tc.delta)
		}
	}
	for name, want := range map[string]float64{
		"karlmalone_push_connections":   1,
		"karlmalone_push_subscriptions": 1,
	} {
		if got := metricValue(after, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if metricValue(after, "karlmalone_db_pool_acquires_total") <= metricValue(before, "karlmalone_db_pool_acquires_total") {
		t.Error("database pool acquisitions did not move")
	}

	// Each server counts only itself.
	if got := metricValue(scrape(t, other), "karlmalone_rpc_handled_total", "procedure", send); got > 0 {
		t.Errorf("the other server counted %v SendMessage calls", got)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	const allowed = "https://app.example.com"
	e := newEnv(t, withConfig(func(c *server.Config) { c.CORSOrigins = []string{allowed} }))
	plain := newEnv(t)

	preflight := func(e *env, origin, path, method, headers string) *http.Response {
		t.Helper()
		// As browsers send it (Fetch): lowercase, sorted, no spaces.
		list := strings.Split(headers, ",")
		slices.Sort(list)
		headers = strings.Join(list, ",")
		return attDo(t, e.H1, "OPTIONS", e.URL+path, "", nil, http.Header{
			"Origin":                         {origin},
			"Access-Control-Request-Method":  {method},
			"Access-Control-Request-Headers": {headers},
		})
	}
	for _, tc := range []struct{ name, path, method, headers string }{
		{"connect", karlmalonev1connect.MemberServiceGetMeProcedure, "POST", "authorization,content-type,connect-protocol-version,connect-timeout-ms"},
		{"grpc-web", karlmalonev1connect.ChatServiceSendMessageProcedure, "POST", "authorization,content-type,x-grpc-web,x-user-agent,grpc-timeout"},
		{"upload", "/v1/attachments", "POST", "authorization,content-type"},
		{"download", "/v1/attachments/1", "GET", "authorization,range,if-none-match"},
	} {
		res := preflight(e, allowed, tc.path, tc.method, tc.headers)
		if res.StatusCode/100 != 2 {
			t.Fatalf("%s preflight: %s", tc.name, res.Status)
		}
		h := res.Header
		if h.Get("Access-Control-Allow-Origin") != allowed {
			t.Errorf("%s: Allow-Origin %q, want %q", tc.name, h.Get("Access-Control-Allow-Origin"), allowed)
		}
		if !strings.Contains(h.Get("Access-Control-Allow-Methods"), tc.method) {
			t.Errorf("%s: Allow-Methods %q lacks %s", tc.name, h.Get("Access-Control-Allow-Methods"), tc.method)
		}
		for want := range strings.SplitSeq(tc.headers, ",") {
			if !strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), want) {
				t.Errorf("%s: Allow-Headers %q lacks %s", tc.name, h.Get("Access-Control-Allow-Headers"), want)
			}
		}
		if h.Get("Access-Control-Max-Age") == "" {
			t.Errorf("%s: no Max-Age: browsers would preflight every call", tc.name)
		}
	}

	// The real request carries the headers too, and exposes what gRPC-Web
	// and downloads need.
	res := attDo(t, e.H1, "POST", e.URL+karlmalonev1connect.MemberServiceGetMeProcedure, "", strings.NewReader("{}"),
		http.Header{"Origin": {allowed}, "Content-Type": {"application/json"}})
	if res.StatusCode != http.StatusUnauthorized || res.Header.Get("Access-Control-Allow-Origin") != allowed {
		t.Fatalf("cross-origin call: %s, Allow-Origin %q", res.Status, res.Header.Get("Access-Control-Allow-Origin"))
	}
	for _, want := range []string{"Grpc-Status", "Grpc-Message", "Etag", "Content-Range"} {
		if !strings.Contains(strings.ToLower(res.Header.Get("Access-Control-Expose-Headers")), strings.ToLower(want)) {
			t.Errorf("Expose-Headers %q lacks %s", res.Header.Get("Access-Control-Expose-Headers"), want)
		}
	}

	// Another origin, or a server with no origins configured: no CORS at all.
	for name, res := range map[string]*http.Response{
		"other origin":   preflight(e, "https://evil.example.com", karlmalonev1connect.MemberServiceGetMeProcedure, "POST", "authorization,content-type"),
		"no cors config": preflight(plain, allowed, karlmalonev1connect.MemberServiceGetMeProcedure, "POST", "authorization,content-type"),
	} {
		for k := range res.Header {
			if strings.HasPrefix(k, "Access-Control-Allow-") {
				t.Errorf("%s: answered %s: %q", name, k, res.Header.Get(k))
			}
		}
	}
}

func TestCheckCORSOrigins(t *testing.T) {
	t.Parallel()
	for _, ok := range [][]string{nil, {"https://app.example.com"}, {"http://localhost:5173", "https://*.example.com"}} {
		if err := server.CheckCORSOrigins(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"*", "app.example.com", "https://", "https://a.example.com/path", "ftp://a.example.com", "https://*.*.example.com"} {
		if err := server.CheckCORSOrigins([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// withTimeout is a short context for calls that must answer at once.
func withTimeout(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestPushOrigins: the command passes the CORS origins to the push hub as
// WebSocket origin patterns; the same strings must work there.
func TestPushOrigins(t *testing.T) {
	t.Parallel()
	const allowed = "https://app.example.com"
	e := newEnv(t, withPushConfig(push.Config{OriginPatterns: []string{allowed}}))
	ann := e.register(t, "ann")
	dial := func(origin string) (*http.Response, error) {
		ws, res, err := websocket.Dial(withTimeout(t), "ws"+strings.TrimPrefix(e.URL, "http")+"/v1/push", &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer " + ann.Token}, "Origin": {origin}},
		})
		if err == nil {
			ws.CloseNow()
		}
		return res, err
	}
	if _, err := dial(allowed); err != nil {
		t.Fatalf("push from %s: %v", allowed, err)
	}
	res, err := dial("https://evil.example.com")
	if err == nil || res == nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("push from another origin: %v (%v), want 403", res, err)
	}
}
