package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestBearerSchemeAnyCase: RPCs, the attachment routes and the push endpoint
// read "Authorization: Bearer <token>" with one parser, so the scheme is
// case-insensitive everywhere (RFC 7235), and a wrong scheme fails everywhere.
func TestBearerSchemeAnyCase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann := e.register(t, "ann")
	for scheme, ok := range map[string]bool{"Bearer": true, "bearer": true, "BEARER": true, "Basic": false} {
		auth := scheme + " " + ann.Token

		req, _ := http.NewRequestWithContext(t.Context(), "POST", e.URL+"/karlmalone.v1.MemberService/GetMe", strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", auth)
		if got := bearerStatus(t, e.H1, req); (got == http.StatusOK) != ok {
			t.Errorf("RPC with %q: %d", scheme, got)
		}

		req, _ = http.NewRequestWithContext(t.Context(), "POST", e.URL+"/v1/attachments", strings.NewReader("hello"))
		req.Header.Set("Authorization", auth)
		if got := bearerStatus(t, e.H1, req); (got == http.StatusCreated) != ok {
			t.Errorf("upload with %q: %d", scheme, got)
		}

		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		ws, res, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.URL, "http")+"/v1/push",
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {auth}}})
		cancel()
		if (err == nil) != ok {
			t.Errorf("push with %q: %v", scheme, err)
		}
		if err == nil {
			ws.CloseNow()
		} else if res != nil && res.StatusCode != http.StatusUnauthorized {
			t.Errorf("push with %q: status %d, want 401", scheme, res.StatusCode)
		}
	}
}

func bearerStatus(t *testing.T, hc *http.Client, req *http.Request) int {
	t.Helper()
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	res.Body.Close()
	return res.StatusCode
}
