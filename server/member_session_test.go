package server_test

import (
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/internal/pgcluster"
	"github.com/karlmalone/karlmalone/schema"
	"github.com/karlmalone/karlmalone/server"
)

// TestSessionsEndAtOnce: Logout, ChangePassword and RevokeSession take effect
// on the very next call.
func TestSessionsEndAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	phoneA := e.register(t, "a")
	laptop := e.login(t, phoneA.Phone, phoneA.Password)
	tablet := e.login(t, phoneA.Phone, phoneA.Password)

	step(t, "ListSessions shows every device and which one asks", func(t *testing.T) {
		list, err := phoneA.Members.ListSessions(ctx, &v1.ListSessionsRequest{})
		if err != nil {
			t.Fatalf("ListSessions: %v", err)
		}
		var want []*v1.Session
		for _, c := range []*client{phoneA, laptop, tablet} {
			want = append(want, &v1.Session{
				Id: c.SessionID, DeviceName: "test", Current: c == phoneA, CreatedAt: set, LastSeenAt: set, ExpiresAt: set,
			})
		}
		wantProto(t, "sessions", want, list.GetSessions(), anyTime)
	})

	step(t, "RevokeSession ends that device and only it", func(t *testing.T) {
		if _, err := phoneA.Members.RevokeSession(ctx, &v1.RevokeSessionRequest{SessionId: tablet.SessionID}); err != nil {
			t.Fatalf("RevokeSession: %v", err)
		}
		_, err := tablet.Members.GetMe(ctx, &v1.GetMeRequest{})
		wantCode(t, err, connect.CodeUnauthenticated)
		if _, err := laptop.Members.GetMe(ctx, &v1.GetMeRequest{}); err != nil {
			t.Fatalf("laptop after revoking the tablet: %v", err)
		}
	})

	step(t, "another member's session is not ours to revoke and looks like none", func(t *testing.T) {
		b := e.register(t, "b")
		_, err := phoneA.Members.RevokeSession(ctx, &v1.RevokeSessionRequest{SessionId: b.SessionID})
		wantCode(t, err, connect.CodeNotFound)
		if _, err := b.Members.GetMe(ctx, &v1.GetMeRequest{}); err != nil {
			t.Fatalf("b's session was touched: %v", err)
		}
	})

	step(t, "ChangePassword keeps the calling session and ends every other", func(t *testing.T) {
		_, err := phoneA.Members.ChangePassword(ctx, &v1.ChangePasswordRequest{OldPassword: "wrong-password", NewPassword: "brand-new-pass"})
		wantCode(t, err, connect.CodePermissionDenied)
		_, err = phoneA.Members.ChangePassword(ctx, &v1.ChangePasswordRequest{OldPassword: phoneA.Password, NewPassword: phoneA.Password})
		wantCode(t, err, connect.CodeInvalidArgument)
		if _, err := phoneA.Members.ChangePassword(ctx, &v1.ChangePasswordRequest{OldPassword: phoneA.Password, NewPassword: "brand-new-pass"}); err != nil {
			t.Fatalf("ChangePassword: %v", err)
		}
		_, err = laptop.Members.GetMe(ctx, &v1.GetMeRequest{})
		wantCode(t, err, connect.CodeUnauthenticated)
		if _, err := phoneA.Members.GetMe(ctx, &v1.GetMeRequest{}); err != nil {
			t.Fatalf("the session that changed the password: %v", err)
		}
		_, err = e.clients("").Members.Login(ctx, &v1.LoginRequest{Phone: phoneA.Phone, Password: phoneA.Password})
		wantCode(t, err, connect.CodeUnauthenticated)
		e.login(t, phoneA.Phone, "brand-new-pass")
	})

	step(t, "Logout ends the calling session", func(t *testing.T) {
		if _, err := phoneA.Members.Logout(ctx, &v1.LogoutRequest{}); err != nil {
			t.Fatalf("Logout: %v", err)
		}
		_, err := phoneA.Members.GetMe(ctx, &v1.GetMeRequest{})
		wantCode(t, err, connect.CodeUnauthenticated)
	})
}

// TestRevokedSessionLosesItsPushSocket: a revoked session's socket is closed
// at once (after a session_revoked event), and the member's other device is told.
func TestRevokedSessionLosesItsPushSocket(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	phone := e.register(t, "a")
	laptop := e.login(t, phone.Phone, phone.Password)
	laptopEvents := e.connect(t, laptop)
	phoneEvents := e.connect(t, phone)
	if _, err := phone.Members.RevokeSession(t.Context(), &v1.RevokeSessionRequest{SessionId: laptop.SessionID}); err != nil {
		t.Fatalf("RevokeSession: %v", err)
	}
	wantProto(t, "the phone's event", &v1.SessionRevoked{SessionId: laptop.SessionID}, phoneEvents.next().GetSessionRevoked())
	laptopEvents.wantClosed(4001)
}

// TestProfileAndSearch covers UpdateProfile, GetMember (no phone for others)
// and SearchMembers by phone and by nickname prefix, paged.
func TestProfileAndSearch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	me := e.register(t, "searcher")
	var others []*client
	for i := range 5 {
		others = append(others, e.register(t, fmt.Sprintf("Zed_%d", i)))
	}
	e.register(t, "Zedd") // "_" must match literally, not as a LIKE wildcard

	nick, memo := "New Name", "hello"
	up, err := me.Members.UpdateProfile(ctx, &v1.UpdateProfileRequest{Nickname: &nick, Memo: &memo})
	if err != nil {
		t.Fatalf("UpdateProfile: %v", err)
	}
	self := &v1.Member{Id: me.ID, Phone: me.Phone, Nickname: nick, Memo: memo, CreatedAt: set}
	wantProto(t, "UpdateProfile", self, up.GetMember(), anyTime)
	avatar := "https://example.com/a.png"
	up, err = me.Members.UpdateProfile(ctx, &v1.UpdateProfileRequest{Avatar: &avatar})
	if err != nil {
		t.Fatalf("partial UpdateProfile: %v", err)
	}
	self.Avatar = avatar // and the unset fields stay
	wantProto(t, "partial UpdateProfile", self, up.GetMember(), anyTime)

	got, err := me.Members.GetMember(ctx, &v1.GetMemberRequest{MemberId: others[0].ID})
	if err != nil {
		t.Fatalf("GetMember: %v", err)
	}
	// Another member's phone stays hidden.
	wantProto(t, "GetMember", others[0].public(), got.GetMember(), anyTime)
	_, err = me.Members.GetMember(ctx, &v1.GetMemberRequest{MemberId: 1 << 40})
	wantCode(t, err, connect.CodeNotFound)
	_, err = me.Members.GetMember(ctx, &v1.GetMemberRequest{MemberId: -1})
	wantCode(t, err, connect.CodeInvalidArgument)

	byPhone, err := me.Members.SearchMembers(ctx, &v1.SearchMembersRequest{Query: others[2].Phone})
	if err != nil {
		t.Fatalf("search by phone: %v", err)
	}
	wantProto(t, "search by phone", []*v1.Member{others[2].public()}, byPhone.GetMembers(), anyTime)
	seen := map[int64]bool{}
	for _, page := range pages(t, func(token string) (*v1.SearchMembersResponse, error) {
		return me.Members.SearchMembers(ctx, &v1.SearchMembersRequest{Query: "zed_", PageSize: 2, PageToken: token})
	}) {
		for _, m := range page.GetMembers() {
			if seen[m.GetId()] {
				t.Fatalf("member %d on two pages", m.GetId())
			}
			seen[m.GetId()] = true
		}
	}
	if len(seen) != 5 {
		t.Fatalf("nickname prefix search found %d members, want the 5 Zed_ members", len(seen))
	}
	_, err = me.Members.SearchMembers(ctx, &v1.SearchMembersRequest{Query: "zed", PageToken: "not-a-token"})
	wantCode(t, err, connect.CodeInvalidArgument)
}

// TestRateLimits: register and login are throttled per client address and per
// (phone, address) with resource_exhausted (server/abuse_test.go has the attacks).
func TestRateLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) {
		c.RegisterPerAddr = server.RateLimit{Every: time.Hour, Burst: 3}
		c.LoginPerPhoneAddr = server.RateLimit{Every: time.Hour, Burst: 2}
	}))
	ctx := t.Context()
	anon := e.clients("")
	var phones []string
	for i := range 4 {
		phone := newPhone()
		_, err := anon.Members.Register(ctx, &v1.RegisterRequest{Phone: phone, Password: "s3cret-pass", Nickname: "r"})
		if i < 3 && err != nil {
			t.Fatalf("register %d: %v", i, err)
		}
		if i == 3 {
			wantCode(t, err, connect.CodeResourceExhausted)
		}
		phones = append(phones, phone)
	}
	for i := range 3 {
		_, err := anon.Members.Login(ctx, &v1.LoginRequest{Phone: phones[0], Password: "wrong-pass"})
		if i < 2 {
			wantCode(t, err, connect.CodeUnauthenticated)
		} else {
			wantCode(t, err, connect.CodeResourceExhausted)
		}
	}
	// Another phone has its own budget.
	if _, err := anon.Members.Login(ctx, &v1.LoginRequest{Phone: phones[1], Password: "s3cret-pass"}); err != nil {
		t.Fatalf("login on another phone: %v", err)
	}
}

// TestDatabaseOutage: with the database down, calls answer unavailable (never
// internal), and the server recovers when it is back. It runs its own
// PostgreSQL, since it stops it.
func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() { cluster.Stop() })
	cfg, err := pgxpool.ParseConfig(cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := schema.Migrate(ctx, pool, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	e := newEnv(t, withPool(pool))
	m := e.register(t, "survivor")

	if err := cluster.Stop(); err != nil {
		t.Fatalf("stop cluster: %v", err)
	}
	_, err = m.Members.GetMe(ctx, &v1.GetMeRequest{})
	wantCode(t, err, connect.CodeUnavailable)
	_, err = e.clients("").Members.Login(ctx, &v1.LoginRequest{Phone: m.Phone, Password: m.Password})
	wantCode(t, err, connect.CodeUnavailable)
	_, err = e.clients("").Members.Register(ctx, &v1.RegisterRequest{Phone: newPhone(), Password: "s3cret-pass", Nickname: "x"})
	wantCode(t, err, connect.CodeUnavailable)

	if _, err := pgcluster.Start(ctx, pgcluster.Options{Dir: cluster.Dir(), Fast: true}); err != nil {
		t.Fatalf("restart cluster: %v", err)
	}
	// Connections broken by the restart may fail once each (unavailable);
	// then the pool has replaced them.
	var lastErr error
	for range cfg.MaxConns + 2 {
		if _, lastErr = m.Members.GetMe(ctx, &v1.GetMeRequest{}); lastErr == nil {
			break
		}
		wantCode(t, lastErr, connect.CodeUnavailable)
	}
	if lastErr != nil {
		t.Fatalf("no recovery after the database came back: %v", lastErr)
	}
}
