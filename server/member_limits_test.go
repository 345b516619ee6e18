package server_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// TestMemberThrottles: ChangePassword (each a 19 MiB hash) and lookups of
// one member by phone or id are limited per member with resource_exhausted;
// other members, and nickname search, are not affected.
func TestMemberThrottles(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) {
		c.PasswordChangePerMember = server.RateLimit{Every: time.Hour, Burst: 2}
		c.PhoneLookupPerMember = server.RateLimit{Every: time.Hour, Burst: 3}
		c.MemberLookupPerMember = server.RateLimit{Every: time.Hour, Burst: 3}
	}))
	ctx := t.Context()
	ann, bob := e.register(t, "ann"), e.register(t, "bob")

	step(t, "ChangePassword", func(t *testing.T) {
		for i := range 3 {
			_, err := ann.Members.ChangePassword(ctx, &v1.ChangePasswordRequest{OldPassword: "wrong-password", NewPassword: "another-password"})
			want := connect.CodePermissionDenied
			if i == 2 {
				want = connect.CodeResourceExhausted
			}
			wantCode(t, err, want)
		}
		// Bob's budget is his own.
		if _, err := bob.Members.ChangePassword(ctx, &v1.ChangePasswordRequest{OldPassword: bob.Password, NewPassword: "bobs-new-password"}); err != nil {
			t.Fatalf("bob's ChangePassword: %v", err)
		}
	})

	step(t, "SearchMembers by phone", func(t *testing.T) {
		for i := range 4 {
			res, err := ann.Members.SearchMembers(ctx, &v1.SearchMembersRequest{Query: bob.Phone})
			if i == 3 {
				wantCode(t, err, connect.CodeResourceExhausted)
				continue
			}
			if err != nil || len(res.GetMembers()) != 1 {
				t.Fatalf("lookup %d: %v, %v", i, res, err)
			}
		}
		// A nickname prefix is a paged search, not a lookup: not limited.
		if _, err := ann.Members.SearchMembers(ctx, &v1.SearchMembersRequest{Query: "bo"}); err != nil {
			t.Fatalf("nickname search: %v", err)
		}
		if _, err := bob.Members.SearchMembers(ctx, &v1.SearchMembersRequest{Query: ann.Phone}); err != nil {
			t.Fatalf("bob's phone search: %v", err)
		}
	})

	step(t, "GetMember", func(t *testing.T) {
		for i := range 4 {
			_, err := ann.Members.GetMember(ctx, &v1.GetMemberRequest{MemberId: bob.ID})
			if i == 3 {
				wantCode(t, err, connect.CodeResourceExhausted)
			} else if err != nil {
				t.Fatalf("GetMember %d: %v", i, err)
			}
		}
		if _, err := bob.Members.GetMember(ctx, &v1.GetMemberRequest{MemberId: ann.ID}); err != nil {
			t.Fatalf("bob's GetMember: %v", err)
		}
	})
}

// TestSearchMembersNotOverGET: a phone in a URL ends up in proxy and access
// logs, so SearchMembers is not served over Connect's GET (it is not
// NO_SIDE_EFFECTS); GetMember, which carries only an id, still is.
func TestSearchMembersNotOverGET(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann, bob := e.register(t, "ann"), e.register(t, "bob")
	get := func(procedure, message string) int {
		q := url.Values{"connect": {"v1"}, "encoding": {"json"}, "message": {message}}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.URL+procedure+"?"+q.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+ann.Token)
		res, err := e.H1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := get("/karlmalone.v1.MemberService/SearchMembers", `{"query":"`+bob.Phone+`"}`); got != http.StatusMethodNotAllowed {
		t.Fatalf("SearchMembers over GET: status %d, want 405", got)
	}
	if got := get("/karlmalone.v1.MemberService/GetMember", `{"memberId":"`+fmt.Sprint(bob.ID)+`"}`); got != http.StatusOK {
		t.Fatalf("GetMember over GET: status %d, want 200", got)
	}
	// The same search over POST works.
	if res, err := ann.Members.SearchMembers(t.Context(), &v1.SearchMembersRequest{Query: bob.Phone}); err != nil || len(res.GetMembers()) != 1 {
		t.Fatalf("SearchMembers over POST: %v, %v", res, err)
	}
}
