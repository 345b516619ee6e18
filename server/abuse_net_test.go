package server_test

// Abuse of the transport (issue #10, "Abuse"): many connections that promise
// a body and send nothing, and one member opening sockets and streams
// without end. The limits hold, and everyone else keeps being served.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/push"
	"github.com/karlmalone/karlmalone/server"
)

// 200 connections promise a body and send nothing (half with a token, half
// without): every one is cut off, and meanwhile another member's calls and
// push events go through.
func TestAbuseSlowBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) { c.BodyReadTimeout = 500 * time.Millisecond }))
	attacker, a, b := e.register(t, "mallory"), e.register(t, "ann"), e.register(t, "bob")
	makeContacts(t, a, b)
	bob := e.connect(t, b)

	const n = 200
	conns := make([]net.Conn, n)
	for i := range conns {
		conn, err := net.Dial("tcp", e.URL[len("http://"):])
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer conn.Close()
		token := ""
		if i%2 == 0 {
			token = attacker.Token
		}
		promiseBody(t, conn, karlmalonev1connect.ChatServiceSendMessageProcedure, token, 1<<20, "")
		conns[i] = conn
	}

	// While they hang: others are served, RPC and push.
	for i := range 5 {
		sent := chatSend(t, a, peerText(b.ID, fmt.Sprint("during-", i), "still served"))
		wantProto(t, "bob's event during the attack", sent, bob.next().GetMessage())
	}

	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Go(func() {
			if status := wantCutOff(t, conn, fmt.Sprint("slow connection ", i)); status == http.StatusOK {
				t.Errorf("slow connection %d answered 200", i)
			}
		})
	}
	wg.Wait()
	sent := chatSend(t, a, peerText(b.ID, "after", "still served"))
	wantProto(t, "bob's event after the attack", sent, bob.next().GetMessage())
}

// One member opens sockets and Subscribe streams many times over its cap,
// all at once: it holds exactly the cap, every extra one is refused, and
// another member connects and gets its events meanwhile.
func TestAbuseSocketCap(t *testing.T) {
	t.Parallel()
	const limit = 8
	e := newEnv(t, withPushConfig(push.Config{MaxPerMember: limit}),
		// An open stream shows itself by its first keepalive.
		withConfig(func(c *server.Config) { c.SubscribeKeepalive = 50 * time.Millisecond }))
	attacker, a, b := e.register(t, "mallory"), e.register(t, "ann"), e.register(t, "bob")
	makeContacts(t, a, b)

	const tries = 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	opened, refused := 0, 0
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for i := range tries {
		wg.Go(func() {
			ok := false
			if i%2 == 0 {
				_, status := tryPushDial(t, e, attacker.Token)
				ok = status == http.StatusSwitchingProtocols
				if !ok && status != http.StatusTooManyRequests {
					t.Errorf("socket %d: handshake answered %d, want 101 or 429", i, status)
				}
			} else {
				stream, err := attacker.Chat.Subscribe(ctx, &v1.SubscribeRequest{})
				if err == nil {
					t.Cleanup(func() { stream.Close() })
					if !stream.Receive() { // refused: it ends at once; open: a keepalive
						err = stream.Err()
					}
				}
				switch {
				case err == nil:
					ok = true
				case connect.CodeOf(err) != connect.CodeResourceExhausted:
					t.Errorf("stream %d: %v, want resource_exhausted", i, err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if ok {
				opened++
			} else {
				refused++
			}
		})
	}
	// Meanwhile bob connects and gets ann's messages.
	bob := e.connect(t, b)
	sent := chatSend(t, a, peerText(b.ID, "during", "served"))
	wantProto(t, "bob's event during the attack", sent, bob.next().GetMessage())
	wg.Wait()

	if opened != limit || refused != tries-limit {
		t.Fatalf("attacker opened %d and was refused %d of %d, want %d opened", opened, refused, tries, limit)
	}
	if s := e.Hub.Stats(); s.Connections+s.Subscriptions != limit+1 { // the cap, and bob
		t.Fatalf("hub holds %d sockets and %d streams, want %d in all", s.Connections, s.Subscriptions, limit+1)
	}
}
