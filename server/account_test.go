package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

func TestDeleteAccount(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice, bob, carol, dave, eve := e.register(t, "alice"), e.register(t, "bob"), e.register(t, "carol"), e.register(t, "dave"), e.register(t, "eve")
	aliceLaptop := e.login(t, alice.Phone, alice.Password)
	direct := makeContacts(t, alice, bob)
	shared := newGroup(t, alice, bob, carol) // alice owns it; carol will be its admin
	alone := newGroup(t, alice)              // alice alone
	if _, err := carol.Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: shared.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: shared.GetId(), MemberId: carol.ID, Role: v1.GroupRole_GROUP_ROLE_ADMIN}); err != nil {
		t.Fatal(err)
	}
	if _, err := dave.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: alice.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: eve.ID}); err != nil {
		t.Fatal(err)
	}
	said := chatSend(t, alice, peerText(bob.ID, "a1", "remember me"))
	chatSend(t, alice, groupText(shared.GetId(), "a2", "bye all"))

	step(t, "a wrong password changes nothing", func(t *testing.T) {
		before := e.dbSnapshot(t, "members", "sessions", "contacts", "friend_requests", "blocks", "groups", "conversation_members")
		_, err := alice.Members.DeleteAccount(ctx, &v1.DeleteAccountRequest{Password: "not the password"})
		wantCode(t, err, connect.CodePermissionDenied)
		_, err = alice.Members.DeleteAccount(ctx, &v1.DeleteAccountRequest{})
		wantInvalid(t, err, "password")
		before.wantUnchanged(t, "refused DeleteAccount")
	})

	laptopEvents, bobEvents, carolEvents := e.connect(t, aliceLaptop), e.connect(t, bob), e.connect(t, carol)
	step(t, "delete", func(t *testing.T) {
		if _, err := alice.Members.DeleteAccount(ctx, &v1.DeleteAccountRequest{Password: alice.Password}); err != nil {
			t.Fatal(err)
		}
	})
	step(t, "every session is revoked and its socket closed", func(t *testing.T) {
		laptopEvents.wantClosed(4001) // "session revoked"
		for _, c := range []*client{alice, aliceLaptop} {
			_, err := c.Members.GetMe(ctx, &v1.GetMeRequest{})
			wantCode(t, err, connect.CodeUnauthenticated)
		}
		anon := e.clients("")
		_, err := anon.Members.Login(ctx, &v1.LoginRequest{Phone: alice.Phone, Password: alice.Password})
		wantCode(t, err, connect.CodeUnauthenticated)
	})
	step(t, "the others are told", func(t *testing.T) {
		// Carol, the oldest admin, inherits the group; then alice leaves it.
		wantProto(t, "bob: owner", memberChange(shared.GetId(), carol.ID, alice.ID, v1.GroupRole_GROUP_ROLE_OWNER), bobEvents.next().GetMemberRoleChanged())
		wantProto(t, "bob: left", memberChange(shared.GetId(), alice.ID, alice.ID, v1.GroupRole_GROUP_ROLE_UNSPECIFIED), bobEvents.next().GetMemberLeft())
		wantProto(t, "bob: deleted", &v1.MemberDeleted{MemberId: alice.ID}, bobEvents.next().GetMemberDeleted())
		wantProto(t, "carol: owner", memberChange(shared.GetId(), carol.ID, alice.ID, v1.GroupRole_GROUP_ROLE_OWNER), carolEvents.next().GetMemberRoleChanged())
		carolEvents.next()
		wantProto(t, "carol: deleted", &v1.MemberDeleted{MemberId: alice.ID}, carolEvents.next().GetMemberDeleted())
	})
	step(t, "profile cleared, shown as a deleted member", func(t *testing.T) {
		res, err := bob.Members.GetMember(ctx, &v1.GetMemberRequest{MemberId: alice.ID})
		if err != nil {
			t.Fatal(err)
		}
		wantProto(t, "alice", &v1.Member{Id: alice.ID, Nickname: "Deleted member", Deleted: true, CreatedAt: set}, res.GetMember(), anyTime)
		found, err := bob.Members.SearchMembers(ctx, &v1.SearchMembersRequest{Query: "Deleted"})
		if err != nil {
			t.Fatal(err)
		}
		wantProto(t, "search", []*v1.Member(nil), found.GetMembers())
	})
	step(t, "contacts, requests and blocks are gone", func(t *testing.T) {
		wantProto(t, "bob's contacts", []int64(nil), contactIDs(t, bob))
		wantProto(t, "dave's requests", 0, len(requestsOf(t, dave, v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_OUTGOING)))
		if n := len(e.dbRows(t, "blocks", "blocker_id = $1 OR blocked_id = $1", alice.ID)); n != 0 {
			t.Fatalf("%d blocks left", n)
		}
		_, err := bob.Chat.SendMessage(ctx, peerText(alice.ID, "b1", "hello?"))
		wantCode(t, err, connect.CodePermissionDenied)
		_, err = eve.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: alice.ID})
		wantCode(t, err, connect.CodeNotFound)
	})
	step(t, "groups passed on or dissolved", func(t *testing.T) {
		res, err := bob.Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: shared.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if g := res.GetGroup(); g.GetOwnerId() != carol.ID || g.GetMemberCount() != 2 {
			t.Fatalf("group after: %v", g)
		}
		wantProto(t, "roles", map[int64]v1.GroupRole{bob.ID: v1.GroupRole_GROUP_ROLE_MEMBER, carol.ID: v1.GroupRole_GROUP_ROLE_OWNER}, rolesIn(t, bob, shared.GetId()))
		if n := len(e.dbRows(t, "groups", "id = $1 AND dissolved_at IS NOT NULL", alone.GetId())); n != 1 {
			t.Fatal("the group alice was alone in is not dissolved")
		}
	})
	step(t, "messages stay for the others", func(t *testing.T) {
		wantProto(t, "bob's history", []*v1.Message{said}, chatHistory(t, bob, direct))
		hist := chatHistory(t, carol, shared.GetConversationId())
		if last := hist[len(hist)-1]; last.GetSenderId() != alice.ID || last.GetText() != "bye all" {
			t.Fatalf("group history ends with %v", last)
		}
	})
	step(t, "the phone is free again", func(t *testing.T) {
		anon := e.clients("")
		res, err := anon.Members.Register(ctx, &v1.RegisterRequest{Phone: alice.Phone, Password: "another password", Nickname: "alice2"})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetMember().GetId() == alice.ID {
			t.Fatal("the old id came back")
		}
	})
	step(t, "raw JSON", func(t *testing.T) {
		frank := e.register(t, "frank")
		status, _, raw := e.postJSON(t, "/karlmalone.v1.MemberService/DeleteAccount", frank.Token, `{"password":"wrong password"}`)
		if status != 403 {
			t.Fatalf("wrong password: %d %s", status, raw)
		}
		status, _, raw = e.postJSON(t, "/karlmalone.v1.MemberService/DeleteAccount", frank.Token, fmt.Sprintf(`{"password":%q}`, frank.Password))
		if status != 200 || raw != "{}" {
			t.Fatalf("delete: %d %s", status, raw)
		}
		status, _, raw = e.postJSON(t, "/karlmalone.v1.MemberService/GetMe", frank.Token, `{}`)
		if status != 401 {
			t.Fatalf("after: %d %s", status, raw)
		}
	})
}

func TestExportMyData(t *testing.T) {
	// Two rows a page: every list is read over several pages.
	t.Cleanup(server.SetExportPageForTest(2))
	e := newEnv(t)
	alice, bob, carol := e.register(t, "alice"), e.register(t, "bob"), e.register(t, "carol")
	direct := makeContacts(t, alice, bob)
	g := newGroup(t, alice, bob)
	chatSend(t, alice, peerText(bob.ID, "a1", "hi bob"))
	chatSend(t, bob, peerText(alice.ID, "b1", "hi alice"))
	chatSend(t, bob, peerText(alice.ID, "b0", "still there?"))
	chatSend(t, bob, groupText(g.GetId(), "b2", "hi group"))
	makeContacts(t, bob, carol)
	chatSend(t, bob, peerText(carol.ID, "b3", "not alice's business"))

	get := func(token string) (*http.Response, []byte) {
		t.Helper()
		res := attDo(t, e.H1, "GET", e.URL+"/v1/export", token, nil, nil)
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, b
	}
	step(t, "the caller's data, as JSON", func(t *testing.T) {
		res, body := get(alice.Token)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" ||
			!strings.HasPrefix(res.Header.Get("Content-Disposition"), "attachment;") {
			t.Fatalf("%s %v: %s", res.Status, res.Header, body)
		}
		var doc struct {
			Member        json.RawMessage
			Contacts      []json.RawMessage
			Groups        []json.RawMessage
			Conversations []struct {
				ID       string
				Kind     string
				PeerID   string
				GroupID  string
				Messages []json.RawMessage
			}
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, body)
		}
		member := &v1.Member{}
		if err := protojson.Unmarshal(doc.Member, member); err != nil {
			t.Fatal(err)
		}
		wantProto(t, "member", &v1.Member{Id: alice.ID, Phone: alice.Phone, Nickname: "alice", CreatedAt: set}, member, anyTime)
		if len(doc.Contacts) != 1 || len(doc.Groups) != 1 || len(doc.Conversations) != 2 {
			t.Fatalf("contacts, groups, conversations: %s", body)
		}
		var texts []string
		for _, cv := range doc.Conversations {
			for _, raw := range cv.Messages {
				m := &v1.Message{}
				if err := protojson.Unmarshal(raw, m); err != nil {
					t.Fatal(err)
				}
				texts = append(texts, m.GetText())
			}
		}
		wantProto(t, "messages", []string{"hi bob", "hi alice", "still there?", "hi group"}, texts)
		if doc.Conversations[0].ID != fmt.Sprint(direct) || doc.Conversations[0].PeerID != fmt.Sprint(bob.ID) ||
			doc.Conversations[1].GroupID != fmt.Sprint(g.GetId()) {
			t.Fatalf("conversations: %s", body)
		}
	})
	step(t, "no token", func(t *testing.T) {
		res, body := get("")
		attWantError(t, res, body, http.StatusUnauthorized, "unauthenticated")
	})
}
