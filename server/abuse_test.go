package server_test

// Attacks from issue #10, each as a test that the limit holds AND that
// everyone else keeps being served while it runs.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// behindProxy makes the test's own address (the httptest server sees every
// client at loopback) a trusted proxy, so X-Forwarded-For picks the client
// address of each request.
func behindProxy(c *server.Config) {
	c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// loginFrom is a Login over raw JSON with X-Forwarded-For: from (none when
// ""); it returns the Connect code ("" for success).
func loginFrom(t testing.TB, e *env, from, phone, password string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"phone": phone, "password": password})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.URL+"/karlmalone.v1.MemberService/Login", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if from != "" {
		req.Header.Set("X-Forwarded-For", from)
	}
	res, err := e.H1.Do(req)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 500 {
		t.Fatalf("login answered %d: %s", res.StatusCode, raw)
	}
	if res.StatusCode == http.StatusOK {
		return ""
	}
	var out struct{ Code string }
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("login answered %d with %q", res.StatusCode, raw)
	}
	return out.Code
}

const (
	codeUnauthenticated = "unauthenticated"
	codeExhausted       = "resource_exhausted"
)

// TestAbuseLoginLockout: an attacker guessing the owner's password from one
// address runs out of guesses, while the owner, from their own address, logs
// in throughout (the old per-phone bucket locked them out too), and one
// address trying many phones is stopped by the per-address limit.
func TestAbuseLoginLockout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) {
		behindProxy(c)
		c.LoginPerAddr = server.RateLimit{Every: time.Hour, Burst: 6}
		c.LoginPerPhoneAddr = server.RateLimit{Every: time.Hour, Burst: 3}
	}))
	owner, other := e.register(t, "owner"), e.register(t, "other")
	const attacker, home = "198.51.100.7", "203.0.113.9"

	step(t, "the owner gets in while the attacker hammers", func(t *testing.T) {
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			codes = map[string]int{}
		)
		stop := make(chan struct{})
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c := loginFrom(t, e, attacker, owner.Phone, "not-the-password")
				mu.Lock()
				codes[c]++
				mu.Unlock()
			}
		})
		waitFor(t, "the attacker to be stopped", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return codes[codeExhausted] >= 20
		})
		// The attacker is locked out and still at it. A success costs
		// nothing: more logins than any burst, all fine.
		for range 8 {
			if c := loginFrom(t, e, home, owner.Phone, owner.Password); c != "" {
				t.Errorf("the owner's login during the attack: %s", c)
			}
		}
		close(stop)
		wg.Wait()
		// Three guesses, then nothing but resource_exhausted.
		if codes[codeUnauthenticated] != 3 || len(codes) != 2 {
			t.Fatalf("attacker's answers %v, want 3 unauthenticated and the rest resource_exhausted", codes)
		}
		// Someone else, from elsewhere, is served as ever.
		if c := loginFrom(t, e, "192.0.2.44", other.Phone, other.Password); c != "" {
			t.Fatalf("another member's login: %s", c)
		}
		if _, err := other.Members.GetMe(t.Context(), &v1.GetMeRequest{}); err != nil {
			t.Fatalf("GetMe: %v", err)
		}
	})

	step(t, "one address trying many phones is stopped", func(t *testing.T) {
		const sprayer = "198.51.100.8"
		for i := range 10 {
			want := codeUnauthenticated
			if i >= 6 { // the per-address burst
				want = codeExhausted
			}
			// Each phone once: the per-phone-and-address limit never bites.
			if c := loginFrom(t, e, sprayer, newPhone(), "guess-123456"); c != want {
				t.Fatalf("guess %d: %q, want %q", i, c, want)
			}
		}
		// The owner is still fine from home.
		if c := loginFrom(t, e, home, owner.Phone, owner.Password); c != "" {
			t.Fatalf("the owner's login after the spray: %s", c)
		}
	})
}

// TestLoginAddressBuckets: an IPv6 client counts as its /64 (stepping
// through the addresses of one subscriber buys nothing), and
// X-Forwarded-For is honoured only from a trusted proxy.
func TestLoginAddressBuckets(t *testing.T) {
	t.Parallel()
	limit := server.RateLimit{Every: time.Hour, Burst: 2}

	t.Run("IPv6 by /64", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, withConfig(func(c *server.Config) { behindProxy(c); c.LoginPerAddr = limit }))
		for i, tc := range []struct{ from, want string }{
			{"2001:db8:1:2::1", codeUnauthenticated},
			{"2001:db8:1:2::2", codeUnauthenticated},
			{"2001:db8:1:2:ffff:ffff:ffff:fffe", codeExhausted}, // the same /64
			{"2001:db8:1:3::1", codeUnauthenticated},            // the next /64
			{"198.51.100.1", codeUnauthenticated},
			{"198.51.100.2", codeUnauthenticated}, // IPv4: each address its own
		} {
			if c := loginFrom(t, e, tc.from, newPhone(), "guess-123456"); c != tc.want {
				t.Fatalf("attempt %d from %s: %q, want %q", i, tc.from, c, tc.want)
			}
		}
	})

	t.Run("X-Forwarded-For from an untrusted peer is ignored", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, withConfig(func(c *server.Config) { c.LoginPerAddr = limit }))
		// Each claims another address; all come from loopback and count there.
		for i, from := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", ""} {
			want := codeUnauthenticated
			if i >= 2 {
				want = codeExhausted
			}
			if c := loginFrom(t, e, from, newPhone(), "guess-123456"); c != want {
				t.Fatalf("attempt %d claiming %q: %q, want %q", i, from, c, want)
			}
		}
	})

	t.Run("a trusted proxy's client cannot forge its own entry", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, withConfig(func(c *server.Config) { behindProxy(c); c.LoginPerAddr = limit }))
		// The proxy appends the real client (198.51.100.9); what the client
		// wrote to the left of it is not believed.
		for i, from := range []string{"10.1.1.1, 198.51.100.9", "10.1.1.2, 198.51.100.9", "10.1.1.3, 198.51.100.9"} {
			want := codeUnauthenticated
			if i >= 2 {
				want = codeExhausted
			}
			if c := loginFrom(t, e, from, newPhone(), "guess-123456"); c != want {
				t.Fatalf("attempt %d with %q: %q, want %q", i, from, c, want)
			}
		}
	})
}

// TestAbuseGroupLockTable: a dozen concurrent CreateGroup calls naming
// made-up members used to take an advisory lock per id before checking any
// (about 24,000 locks; on a server with 100 connections, "out of shared
// memory" for everyone). Made-up ids are now refused before any lock (a
// held lock proves it), lists past the per-call cap before any query, and
// others keep being served meanwhile.
func TestAbuseGroupLockTable(t *testing.T) {
	t.Parallel()
	madeUp := func(n int) []int64 {
		ids := make([]int64, n)
		for i := range ids {
			ids[i] = 900_000_000 + int64(i)
		}
		return ids
	}
	for _, tc := range []struct {
		name string
		cfg  func(*server.Config)
		ids  []int64
		code connect.Code
	}{
		// With the cap lifted, only the check before the locks stands.
		{"made-up ids are not found before any lock", func(c *server.Config) { c.GroupMaxInvitees = 2000 }, madeUp(1999), connect.CodeNotFound},
		{"past the per-call cap", func(*server.Config) {}, madeUp(1999), connect.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(tc.cfg))
			attackers := registerN(t, e, "attacker", 3)
			ann, bob := e.register(t, "ann"), e.register(t, "bob")
			makeContacts(t, ann, bob)
			// Hold the contact lock of each attacker with the first made-up
			// id, as a friend request between them would (the server's own
			// query): a call that locks before it checks waits here and runs
			// out of time; one that checks first never gets to it.
			tx, err := e.Pool.Begin(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(context.Background())
			for _, a := range attackers {
				if err := db.New(tx).LockContactPair(t.Context(), db.LockContactPairParams{A: a.ID, B: tc.ids[0]}); err != nil {
					t.Fatal(err)
				}
			}
			var (
				attack  sync.WaitGroup
				mu      sync.Mutex
				slowest time.Duration
			)
			for i := range 12 {
				attack.Go(func() {
					start := time.Now()
					ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
					defer cancel()
					_, err := attackers[i%3].Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "flood", MemberIds: tc.ids})
					if connect.CodeOf(err) != tc.code {
						t.Errorf("attack %d: %v, want %v", i, err, tc.code)
					}
					mu.Lock()
					slowest = max(slowest, time.Since(start))
					mu.Unlock()
				})
			}
			// Meanwhile ann and bob chat and make a group.
			for i := range 5 {
				chatSend(t, ann, peerText(bob.ID, fmt.Sprint("during ", i), "still here"))
			}
			if _, err := ann.Groups.CreateGroup(t.Context(), &v1.CreateGroupRequest{Name: "real", MemberIds: []int64{bob.ID}}); err != nil {
				t.Fatalf("a real CreateGroup during the attack: %v", err)
			}
			attack.Wait()
			t.Logf("%s: 12 concurrent CreateGroup calls with %d made-up ids, the slowest answered in %s", tc.name, len(tc.ids), slowest)
			if logs := e.Logs.String(); strings.Contains(logs, "shared memory") || strings.Contains(logs, "database unavailable") {
				t.Fatalf("the database ran short:\n%s", logs)
			}
		})
	}
}

// TestAbuseTypingFlood: one member calling SendTyping in a loop used to send
// every other member a frame per call (2,000 calls, 600,000 frames). Now one
// typing event per member and conversation goes out per interval; the calls
// in between succeed and send nothing, while other members' typing and
// messages flow as usual and an outsider is refused every time.
func TestAbuseTypingFlood(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) { c.TypingInterval = time.Hour }))
	ctx := t.Context()
	flooder, ann, bob := e.register(t, "flooder"), e.register(t, "ann"), e.register(t, "bob")
	outsider := e.register(t, "outsider")
	g := newGroup(t, flooder, ann, bob)
	conv := g.GetConversationId()
	annEvents, bobEvents := e.connect(t, ann), e.connect(t, bob)

	var flood sync.WaitGroup
	for range 4 {
		flood.Go(func() {
			for range 50 {
				if _, err := flooder.Chat.SendTyping(ctx, &v1.SendTypingRequest{ConversationId: conv}); err != nil {
					t.Errorf("SendTyping: %v", err)
					return
				}
			}
		})
	}
	// Meanwhile ann types too (her own turn) and sends a message.
	if _, err := ann.Chat.SendTyping(ctx, &v1.SendTypingRequest{ConversationId: conv}); err != nil {
		t.Fatalf("ann's SendTyping: %v", err)
	}
	chatSend(t, ann, groupText(g.GetId(), "during", "hi all"))
	flood.Wait()
	for range 3 {
		_, err := outsider.Chat.SendTyping(ctx, &v1.SendTypingRequest{ConversationId: conv})
		wantCode(t, err, connect.CodeNotFound)
	}
	// A message after the flood marks the end of what bob receives.
	last := chatSend(t, ann, groupText(g.GetId(), "after", "done"))

	got := map[int64]int{} // typing events bob received, by typist
	for {
		ev := bobEvents.next()
		if ev.GetTyping() != nil {
			got[ev.GetTyping().GetMemberId()]++
		}
		if ev.GetMessage().GetSeq() == last.GetSeq() {
			break
		}
	}
	if got[flooder.ID] != 1 || got[ann.ID] != 1 || len(got) != 2 {
		t.Fatalf("bob received typing events %v, want one from the flooder (%d) and one from ann (%d)", got, flooder.ID, ann.ID)
	}
	// Ann heard the flooder once too, and her messages went out.
	if ev := annEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetTyping() != nil }); ev.GetTyping().GetMemberId() != flooder.ID {
		t.Fatalf("ann got %v", ev)
	}
}
