package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// Contacts and blocks are set up with SQL rather than ContactService, so these
// tests exercise GroupService alone.

// befriend makes a and each of others contacts of each other (both sides,
// with their direct conversation), as an accepted friend request would.
func befriend(t testing.TB, e *env, a *client, others ...*client) {
	t.Helper()
	for _, b := range others {
		_, err := e.Pool.Exec(context.Background(), `
WITH c AS (
    INSERT INTO conversations (kind, member_lo, member_hi)
    VALUES (1, least($1::bigint, $2::bigint), greatest($1::bigint, $2::bigint))
    ON CONFLICT (member_lo, member_hi) WHERE kind = 1 DO UPDATE SET kind = excluded.kind
    RETURNING id)
INSERT INTO contacts (owner_id, member_id, conversation_id)
SELECT x.o, x.m, c.id FROM c, (VALUES ($1::bigint, $2::bigint), ($2::bigint, $1::bigint)) AS x (o, m)
ON CONFLICT DO NOTHING`, a.ID, b.ID)
		if err != nil {
			t.Fatalf("befriend: %v", err)
		}
	}
}

func blockMember(t testing.TB, e *env, blocker, blocked *client) {
	t.Helper()
	if _, err := e.Pool.Exec(context.Background(), `INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2)`, blocker.ID, blocked.ID); err != nil {
		t.Fatalf("block: %v", err)
	}
}

// registerN registers n members named prefix-0 … prefix-(n-1).
func registerN(t testing.TB, e *env, prefix string, n int) []*client {
	t.Helper()
	out := make([]*client, n)
	for i := range out {
		out[i] = e.register(t, fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

// newGroup befriends owner with members and creates an invite-only group of them.
func newGroup(t testing.TB, e *env, owner *client, members ...*client) *v1.Group {
	t.Helper()
	befriend(t, e, owner, members...)
	ids := make([]int64, len(members))
	for i, m := range members {
		ids[i] = m.ID
	}
	res, err := owner.Groups.CreateGroup(context.Background(), &v1.CreateGroupRequest{Name: "group", MemberIds: ids})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	return res.GetGroup()
}

// groupState is the group's row and its membership rows as text, for
// "nothing changed" comparisons.
func groupState(t testing.TB, e *env, groupID int64) string {
	t.Helper()
	var s string
	err := e.Pool.QueryRow(context.Background(), `
SELECT row_to_json(g)::text || ' ' || coalesce((
    SELECT json_agg(cm ORDER BY cm.member_id)::text FROM conversation_members cm
    WHERE cm.conversation_id = g.conversation_id), '[]')
FROM groups g WHERE g.id = $1`, groupID).Scan(&s)
	if err != nil {
		t.Fatalf("group state: %v", err)
	}
	return s
}

// memberCounts returns the group's member_count and its actual membership rows.
func memberCounts(t testing.TB, e *env, groupID int64) (count, rows int) {
	t.Helper()
	err := e.Pool.QueryRow(context.Background(), `
SELECT g.member_count, (SELECT count(*) FROM conversation_members cm WHERE cm.conversation_id = g.conversation_id)
FROM groups g WHERE g.id = $1`, groupID).Scan(&count, &rows)
	if err != nil {
		t.Fatalf("member counts: %v", err)
	}
	return count, rows
}

// roleOf is the member's role in the group's conversation, 0 when not in it.
func roleOf(t testing.TB, e *env, groupID, memberID int64) int {
	t.Helper()
	var role int
	err := e.Pool.QueryRow(context.Background(), `
SELECT coalesce((SELECT cm.role FROM conversation_members cm JOIN groups g ON g.conversation_id = cm.conversation_id
                 WHERE g.id = $1 AND cm.member_id = $2), 0)`, groupID, memberID).Scan(&role)
	if err != nil {
		t.Fatalf("role: %v", err)
	}
	return role
}

func TestGroupCreate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, a, b := e.register(t, "owner"), e.register(t, "a"), e.register(t, "b")
	befriend(t, e, owner, a, b)

	res, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{
		Name: "  Jazz fans  ", MemberIds: []int64{a.ID, b.ID},
		Avatar: "https://img.example/jazz.png", Notice: "Be nice.",
	})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	g := res.GetGroup()
	if g.GetId() == 0 || g.GetName() != "Jazz fans" || g.GetOwnerId() != owner.ID || g.GetMemberCount() != 3 ||
		g.GetConversationId() == 0 || g.GetJoinPolicy() != v1.JoinPolicy_JOIN_POLICY_INVITE_ONLY ||
		g.GetMaxMembers() != int32(server.DefaultConfig().GroupMaxMembers) || g.GetAvatar() != "https://img.example/jazz.png" || g.GetNotice() != "Be nice." {
		t.Fatalf("CreateGroup returned %v", g)
	}
	if count, rows := memberCounts(t, e, g.GetId()); count != 3 || rows != 3 {
		t.Fatalf("member_count %d, rows %d; want 3 and 3", count, rows)
	}
	for id, want := range map[int64]int{owner.ID: 3, a.ID: 1, b.ID: 1} {
		if got := roleOf(t, e, g.GetId(), id); got != want {
			t.Errorf("member %d has role %d, want %d", id, got, want)
		}
	}

	// A member reads it over gRPC too, and sees its own role.
	got, err := e.grpcClients(a.Token).Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: g.GetId()})
	if err != nil {
		t.Fatalf("GetGroup: %v", err)
	}
	if got.GetMyRole() != v1.GroupRole_GROUP_ROLE_MEMBER || got.GetGroup().GetMemberCount() != 3 {
		t.Fatalf("GetGroup returned %v", got)
	}
	owned, err := owner.Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: g.GetId()})
	if err != nil || owned.GetMyRole() != v1.GroupRole_GROUP_ROLE_OWNER {
		t.Fatalf("GetGroup as owner: %v, %v", owned, err)
	}

	list, err := b.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: g.GetId()})
	if err != nil {
		t.Fatalf("ListGroupMembers: %v", err)
	}
	if len(list.GetMembers()) != 3 || list.GetNextPageToken() != "" {
		t.Fatalf("ListGroupMembers returned %v", list)
	}
	for _, m := range list.GetMembers() {
		if (m.GetMember().GetPhone() != "") != (m.GetMember().GetId() == b.ID) {
			t.Errorf("member %d: phone %q shown to member %d", m.GetMember().GetId(), m.GetMember().GetPhone(), b.ID)
		}
		if m.GetMember().GetId() == owner.ID && m.GetRole() != v1.GroupRole_GROUP_ROLE_OWNER {
			t.Errorf("owner listed with role %v", m.GetRole())
		}
	}
}

// TestGroupCreateJSON posts JSON the way curl does.
func TestGroupCreateJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	owner, a := e.register(t, "owner"), e.register(t, "a")
	befriend(t, e, owner, a)

	post := func(body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.URL+"/karlmalone.v1.GroupService/CreateGroup", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+owner.Token)
		res, err := e.H1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		var out map[string]any
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("response %q: %v", raw, err)
		}
		return res.StatusCode, out
	}

	status, out := post(fmt.Sprintf(`{"name":"Curl crew","memberIds":["%d"],"joinPolicy":"JOIN_POLICY_OPEN"}`, a.ID))
	if status != http.StatusOK {
		t.Fatalf("status %d: %v", status, out)
	}
	g, _ := out["group"].(map[string]any)
	if g["ownerId"] != fmt.Sprint(owner.ID) || g["memberCount"] != float64(2) || g["joinPolicy"] != "JOIN_POLICY_OPEN" {
		t.Fatalf("group %v", g)
	}
	if id, ok := g["id"].(string); !ok || id == "" {
		t.Fatalf("group id %v, want an int64 as a JSON string", g["id"])
	}

	status, out = post(`{"name":"","memberIds":["0"]}`)
	msg, _ := out["message"].(string)
	if status != http.StatusBadRequest || out["code"] != "invalid_argument" || !strings.Contains(msg, "name") || !strings.Contains(msg, "member_ids") {
		t.Fatalf("bad request: status %d, %v", status, out)
	}
}

func TestGroupCreateRefusesMembers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) { c.GroupMaxMembers = 3 }))
	ctx := t.Context()
	owner, friend, stranger, blocker, blocked := e.register(t, "owner"), e.register(t, "friend"),
		e.register(t, "stranger"), e.register(t, "blocker"), e.register(t, "blocked")
	befriend(t, e, owner, friend, blocker, blocked)
	blockMember(t, e, blocker, owner) // blocker blocked the owner while still a contact
	blockMember(t, e, owner, blocked) // and the owner blocked someone

	cases := []struct {
		name string
		ids  []int64
		code connect.Code
		in   string
	}{
		{"not a contact", []int64{friend.ID, stranger.ID}, connect.CodeFailedPrecondition, fmt.Sprint(stranger.ID)},
		{"blocked the caller", []int64{blocker.ID}, connect.CodeFailedPrecondition, fmt.Sprint(blocker.ID)},
		{"blocked by the caller", []int64{blocked.ID}, connect.CodeFailedPrecondition, fmt.Sprint(blocked.ID)},
		{"unknown member", []int64{friend.ID, 987654321}, connect.CodeNotFound, "987654321"},
		{"yourself", []int64{owner.ID}, connect.CodeInvalidArgument, "member_ids"},
		{"past the limit", []int64{friend.ID, blocker.ID, blocked.ID}, connect.CodeInvalidArgument, "member_ids"},
	}
	for _, tc := range cases {
		_, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "g", MemberIds: tc.ids})
		wantCode(t, err, tc.code)
		if !strings.Contains(err.Error(), tc.in) {
			t.Errorf("%s: error %q does not mention %q", tc.name, err, tc.in)
		}
	}
	var groups, rows int
	if err := e.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM groups), (SELECT count(*) FROM conversations WHERE kind = 2)`).Scan(&groups, &rows); err != nil {
		t.Fatal(err)
	}
	if groups != 0 || rows != 0 {
		t.Fatalf("refused creates left %d groups and %d group conversations", groups, rows)
	}
	// At the limit exactly is fine.
	res, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "g", MemberIds: []int64{friend.ID}})
	if err != nil || res.GetGroup().GetMaxMembers() != 3 {
		t.Fatalf("CreateGroup: %v, %v", res, err)
	}
}

func TestGroupValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, a := e.register(t, "owner"), e.register(t, "a")
	g := newGroup(t, e, owner, a)
	gid := g.GetId()
	long := strings.Repeat("é", 65)
	cases := []struct {
		name  string
		call  func() error
		field string
	}{
		{"create: empty name", func() error {
			_, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "   "})
			return err
		}, "name"},
		{"create: 65-rune name", func() error {
			_, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: long})
			return err
		}, "name"},
		{"create: long notice", func() error {
			_, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "x", Notice: strings.Repeat("n", 1025)})
			return err
		}, "notice"},
		{"create: avatar not http", func() error {
			_, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "x", Avatar: "ftp://x/y.png"})
			return err
		}, "avatar"},
		{"create: repeated member", func() error {
			_, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "x", MemberIds: []int64{a.ID, a.ID}})
			return err
		}, "member_ids"},
		{"create: member id 0", func() error {
			_, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "x", MemberIds: []int64{0}})
			return err
		}, "member_ids"},
		{"create: unknown join policy", func() error {
			_, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "x", JoinPolicy: 7})
			return err
		}, "join_policy"},
		{"get: group_id 0", func() error {
			_, err := owner.Groups.GetGroup(ctx, &v1.GetGroupRequest{})
			return err
		}, "group_id"},
		{"update: group_id -1", func() error {
			_, err := owner.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: -1, Name: new("x")})
			return err
		}, "group_id"},
		{"update: empty name", func() error {
			_, err := owner.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: gid, Name: new(" ")})
			return err
		}, "name"},
		{"update: long name", func() error {
			_, err := owner.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: gid, Name: new(long)})
			return err
		}, "name"},
		{"update: long notice", func() error {
			_, err := owner.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: gid, Notice: new(strings.Repeat("n", 1025))})
			return err
		}, "notice"},
		{"update: unspecified join policy", func() error {
			_, err := owner.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: gid, JoinPolicy: new(v1.JoinPolicy_JOIN_POLICY_UNSPECIFIED)})
			return err
		}, "join_policy"},
		{"list members: group_id 0", func() error {
			_, err := owner.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{})
			return err
		}, "group_id"},
		{"list members: negative page size", func() error {
			_, err := owner.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: gid, PageSize: -1})
			return err
		}, "page_size"},
		{"list members: forged token", func() error {
			_, err := owner.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: gid, PageToken: "not-a-token"})
			return err
		}, "page_token"},
		{"list my groups: forged token", func() error {
			_, err := owner.Groups.ListMyGroups(ctx, &v1.ListMyGroupsRequest{PageToken: "%%%"})
			return err
		}, "page_token"},
		{"add: group_id 0", func() error {
			_, err := owner.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{MemberIds: []int64{a.ID}})
			return err
		}, "group_id"},
		{"add: no members", func() error {
			_, err := owner.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: gid})
			return err
		}, "member_ids"},
		{"add: member id -5", func() error {
			_, err := owner.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: gid, MemberIds: []int64{-5}})
			return err
		}, "member_ids"},
		{"remove: member_id 0", func() error {
			_, err := owner.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: gid})
			return err
		}, "member_id"},
		{"remove: yourself", func() error {
			_, err := owner.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: gid, MemberId: owner.ID})
			return err
		}, "member_id"},
		{"join: group_id 0", func() error {
			_, err := owner.Groups.JoinGroup(ctx, &v1.JoinGroupRequest{})
			return err
		}, "group_id"},
		{"leave: group_id 0", func() error {
			_, err := owner.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{})
			return err
		}, "group_id"},
		{"transfer: member_id -1", func() error {
			_, err := owner.Groups.TransferOwnership(ctx, &v1.TransferOwnershipRequest{GroupId: gid, MemberId: -1})
			return err
		}, "member_id"},
		{"transfer: to yourself", func() error {
			_, err := owner.Groups.TransferOwnership(ctx, &v1.TransferOwnershipRequest{GroupId: gid, MemberId: owner.ID})
			return err
		}, "member_id"},
		{"set role: owner", func() error {
			_, err := owner.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: gid, MemberId: a.ID, Role: v1.GroupRole_GROUP_ROLE_OWNER})
			return err
		}, "role"},
		{"set role: group_id 0", func() error {
			_, err := owner.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{MemberId: a.ID, Role: v1.GroupRole_GROUP_ROLE_ADMIN})
			return err
		}, "group_id"},
		{"dissolve: group_id 0", func() error {
			_, err := owner.Groups.DissolveGroup(ctx, &v1.DissolveGroupRequest{})
			return err
		}, "group_id"},
	}
	before := groupState(t, e, gid)
	for _, tc := range cases {
		err := tc.call()
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, want invalid_argument naming %s", tc.name, err, tc.field)
		}
	}
	if after := groupState(t, e, gid); after != before {
		t.Fatalf("invalid requests changed the group:\n%s\n%s", before, after)
	}
	// 64 runes is allowed, however many bytes they take.
	if _, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: long[len("é"):]}); err != nil {
		t.Fatalf("CreateGroup with a 64-rune name: %v", err)
	}
}

// TestGroupUnknownIDs: ids of no group, and of a dissolved one, are not found
// for every method.
func TestGroupUnknownIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, a, b := e.register(t, "owner"), e.register(t, "a"), e.register(t, "b")
	dissolved := newGroup(t, e, owner, a, b)
	if _, err := owner.Groups.DissolveGroup(ctx, &v1.DissolveGroupRequest{GroupId: dissolved.GetId()}); err != nil {
		t.Fatalf("DissolveGroup: %v", err)
	}
	befriend(t, e, a, b)
	for _, gid := range []int64{dissolved.GetId(), 987654321} {
		for _, c := range []*client{owner, a} {
			calls := map[string]func() error{
				"GetGroup": func() error {
					_, err := c.Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: gid})
					return err
				},
				"UpdateGroup": func() error {
					_, err := c.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: gid, Name: new("x")})
					return err
				},
				"ListGroupMembers": func() error {
					_, err := c.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: gid})
					return err
				},
				"AddGroupMembers": func() error {
					_, err := c.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: gid, MemberIds: []int64{b.ID}})
					return err
				},
				"RemoveGroupMember": func() error {
					_, err := c.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: gid, MemberId: b.ID})
					return err
				},
				"JoinGroup": func() error {
					_, err := c.Groups.JoinGroup(ctx, &v1.JoinGroupRequest{GroupId: gid})
					return err
				},
				"LeaveGroup": func() error {
					_, err := c.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: gid})
					return err
				},
				"TransferOwnership": func() error {
					_, err := c.Groups.TransferOwnership(ctx, &v1.TransferOwnershipRequest{GroupId: gid, MemberId: b.ID})
					return err
				},
				"SetMemberRole": func() error {
					_, err := c.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: gid, MemberId: b.ID, Role: v1.GroupRole_GROUP_ROLE_ADMIN})
					return err
				},
				"DissolveGroup": func() error {
					_, err := c.Groups.DissolveGroup(ctx, &v1.DissolveGroupRequest{GroupId: gid})
					return err
				},
			}
			for name, call := range calls {
				if err := call(); connect.CodeOf(err) != connect.CodeNotFound {
					t.Errorf("%s(group %d) by member %d: got %v, want not_found", name, gid, c.ID, err)
				}
			}
		}
	}
	// The group's conversation kept no members: chat refuses it to everyone.
	var rows int
	if err := e.Pool.QueryRow(ctx, `SELECT count(*) FROM conversation_members WHERE conversation_id = $1`, dissolved.GetConversationId()).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("dissolved group's conversation has %d members (%v)", rows, err)
	}
	if count, _ := memberCounts(t, e, dissolved.GetId()); count != 0 {
		t.Fatalf("dissolved group's member_count is %d", count)
	}
	// Unknown members to add or act on are not found either.
	live := newGroup(t, e, owner, a)
	_, err := owner.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: live.GetId(), MemberIds: []int64{987654321}})
	wantCode(t, err, connect.CodeNotFound)
	_, err = owner.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: live.GetId(), MemberId: 987654321})
	wantCode(t, err, connect.CodeNotFound)
	_, err = owner.Groups.TransferOwnership(ctx, &v1.TransferOwnershipRequest{GroupId: live.GetId(), MemberId: b.ID})
	wantCode(t, err, connect.CodeNotFound)
	_, err = owner.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: live.GetId(), MemberId: b.ID, Role: v1.GroupRole_GROUP_ROLE_ADMIN})
	wantCode(t, err, connect.CodeNotFound)
}

// TestGroupLifecycleEvents walks the membership changes and checks that each
// is pushed to the right devices and that member_count follows the rows.
func TestGroupLifecycleEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, admin, m, newbie, joiner := e.register(t, "owner"), e.register(t, "admin"), e.register(t, "m"),
		e.register(t, "newbie"), e.register(t, "joiner")
	befriend(t, e, owner, admin, m)
	befriend(t, e, admin, newbie, m)
	mEvents := e.connect(t, m)
	newbieEvents := e.connect(t, newbie)

	res, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "crew", MemberIds: []int64{admin.ID, m.ID}})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	gid := res.GetGroup().GetId()
	if ev := mEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetGroupCreated() != nil }); ev.GetGroupCreated().GetId() != gid || ev.GetAt() == nil {
		t.Fatalf("group_created: %v", ev)
	}
	checkCount := func(want int) {
		t.Helper()
		if count, rows := memberCounts(t, e, gid); count != want || rows != want {
			t.Fatalf("member_count %d, rows %d; want %d", count, rows, want)
		}
	}

	if _, err := owner.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: gid, MemberId: admin.ID, Role: v1.GroupRole_GROUP_ROLE_ADMIN}); err != nil {
		t.Fatalf("SetMemberRole: %v", err)
	}
	ev := mEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetMemberRoleChanged() != nil })
	if c := ev.GetMemberRoleChanged(); c.GetMemberId() != admin.ID || c.GetRole() != v1.GroupRole_GROUP_ROLE_ADMIN || c.GetActorId() != owner.ID {
		t.Fatalf("member_role_changed: %v", c)
	}
	// Owner-only rules on the owner itself.
	_, err = owner.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: gid, MemberId: owner.ID, Role: v1.GroupRole_GROUP_ROLE_MEMBER})
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = owner.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: gid})
	wantCode(t, err, connect.CodeFailedPrecondition)

	// An admin updates part of the group; members hear of it.
	up, err := admin.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: gid, Name: new("crew 2"), JoinPolicy: new(v1.JoinPolicy_JOIN_POLICY_OPEN)})
	if err != nil {
		t.Fatalf("UpdateGroup: %v", err)
	}
	if g := up.GetGroup(); g.GetName() != "crew 2" || g.GetJoinPolicy() != v1.JoinPolicy_JOIN_POLICY_OPEN || g.GetNotice() != "" {
		t.Fatalf("UpdateGroup returned %v", g)
	}
	ev = mEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetGroupUpdated() != nil })
	if ev.GetGroupUpdated().GetName() != "crew 2" {
		t.Fatalf("group_updated: %v", ev)
	}

	// An admin adds its contact (and an existing member, skipped).
	add, err := admin.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: gid, MemberIds: []int64{newbie.ID, m.ID}})
	if err != nil {
		t.Fatalf("AddGroupMembers: %v", err)
	}
	if len(add.GetAdded()) != 1 || add.GetAdded()[0].GetMember().GetId() != newbie.ID || add.GetGroup().GetMemberCount() != 4 {
		t.Fatalf("AddGroupMembers returned %v", add)
	}
	checkCount(4)
	for _, evs := range []*events{mEvents, newbieEvents} {
		ev := evs.nextWhere(func(ev *v1.Event) bool { return ev.GetMemberJoined() != nil })
		if c := ev.GetMemberJoined(); c.GetMemberId() != newbie.ID || c.GetActorId() != admin.ID || c.GetGroupId() != gid {
			t.Fatalf("member_joined: %v", c)
		}
	}

	// Someone joins the now open group.
	if _, err := joiner.Groups.JoinGroup(ctx, &v1.JoinGroupRequest{GroupId: gid}); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}
	_, err = joiner.Groups.JoinGroup(ctx, &v1.JoinGroupRequest{GroupId: gid})
	wantCode(t, err, connect.CodeAlreadyExists)
	checkCount(5)
	ev = mEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetMemberJoined() != nil })
	if c := ev.GetMemberJoined(); c.GetMemberId() != joiner.ID || c.GetActorId() != joiner.ID {
		t.Fatalf("member_joined: %v", c)
	}

	// The admin removes the newbie, whose own device hears of it.
	if _, err := admin.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: gid, MemberId: newbie.ID}); err != nil {
		t.Fatalf("RemoveGroupMember: %v", err)
	}
	checkCount(4)
	for _, evs := range []*events{mEvents, newbieEvents} {
		ev := evs.nextWhere(func(ev *v1.Event) bool { return ev.GetMemberRemoved() != nil })
		if c := ev.GetMemberRemoved(); c.GetMemberId() != newbie.ID || c.GetActorId() != admin.ID {
			t.Fatalf("member_removed: %v", c)
		}
	}
	_, err = newbie.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: gid})
	wantCode(t, err, connect.CodePermissionDenied) // open group: visible, but members only

	// The joiner leaves.
	if _, err := joiner.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: gid}); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}
	checkCount(3)
	ev = mEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetMemberLeft() != nil })
	if c := ev.GetMemberLeft(); c.GetMemberId() != joiner.ID {
		t.Fatalf("member_left: %v", c)
	}

	// Ownership moves to m; the old owner becomes an admin and may now leave.
	tr, err := owner.Groups.TransferOwnership(ctx, &v1.TransferOwnershipRequest{GroupId: gid, MemberId: m.ID})
	if err != nil {
		t.Fatalf("TransferOwnership: %v", err)
	}
	if tr.GetGroup().GetOwnerId() != m.ID || roleOf(t, e, gid, owner.ID) != 2 || roleOf(t, e, gid, m.ID) != 3 {
		t.Fatalf("after transfer: %v, old owner role %d", tr.GetGroup(), roleOf(t, e, gid, owner.ID))
	}
	ev = mEvents.nextWhere(func(ev *v1.Event) bool {
		return ev.GetMemberRoleChanged().GetRole() == v1.GroupRole_GROUP_ROLE_OWNER
	})
	if ev.GetMemberRoleChanged().GetMemberId() != m.ID {
		t.Fatalf("member_role_changed: %v", ev)
	}
	if _, err := owner.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: gid}); err != nil {
		t.Fatalf("LeaveGroup by the old owner: %v", err)
	}
	checkCount(2)

	// The new owner dissolves it; every former member's device hears of it.
	adminEvents := e.connect(t, admin)
	if _, err := m.Groups.DissolveGroup(ctx, &v1.DissolveGroupRequest{GroupId: gid}); err != nil {
		t.Fatalf("DissolveGroup: %v", err)
	}
	for _, evs := range []*events{mEvents, adminEvents} {
		ev := evs.nextWhere(func(ev *v1.Event) bool { return ev.GetGroupDissolved() != nil })
		if ev.GetGroupDissolved().GetGroupId() != gid {
			t.Fatalf("group_dissolved: %v", ev)
		}
	}
	_, err = m.Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: gid})
	wantCode(t, err, connect.CodeNotFound)
}

// TestGroupAuthorization tries every method as a stranger, a removed member,
// a plain member acting as an admin and an admin acting as the owner. Each is
// refused, and the group's rows are exactly as before.
func TestGroupAuthorization(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, admin, admin2, member, target, removed, stranger, outsider := e.register(t, "owner"), e.register(t, "admin"),
		e.register(t, "admin2"), e.register(t, "member"), e.register(t, "target"), e.register(t, "removed"),
		e.register(t, "stranger"), e.register(t, "outsider")
	g := newGroup(t, e, owner, admin, admin2, member, target, removed)
	gid := g.GetId()
	for _, c := range []*client{admin, admin2} {
		if _, err := owner.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: gid, MemberId: c.ID, Role: v1.GroupRole_GROUP_ROLE_ADMIN}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := owner.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: gid, MemberId: removed.ID}); err != nil {
		t.Fatal(err)
	}
	// Everyone may invite the outsider, so a refusal is about the role alone.
	for _, c := range []*client{admin, member, removed, stranger} {
		befriend(t, e, c, outsider)
	}

	type call func(c *client) error
	calls := map[string]call{
		"GetGroup": func(c *client) error {
			_, err := c.Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: gid})
			return err
		},
		"UpdateGroup": func(c *client) error {
			_, err := c.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: gid, Name: new("hacked"), JoinPolicy: new(v1.JoinPolicy_JOIN_POLICY_OPEN)})
			return err
		},
		"ListGroupMembers": func(c *client) error {
			_, err := c.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: gid})
			return err
		},
		"AddGroupMembers": func(c *client) error {
			_, err := c.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: gid, MemberIds: []int64{outsider.ID}})
			return err
		},
		"RemoveGroupMember(target)": func(c *client) error {
			_, err := c.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: gid, MemberId: target.ID})
			return err
		},
		"RemoveGroupMember(owner)": func(c *client) error {
			_, err := c.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: gid, MemberId: owner.ID})
			return err
		},
		"RemoveGroupMember(admin2)": func(c *client) error {
			_, err := c.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: gid, MemberId: admin2.ID})
			return err
		},
		"JoinGroup": func(c *client) error {
			_, err := c.Groups.JoinGroup(ctx, &v1.JoinGroupRequest{GroupId: gid})
			return err
		},
		"LeaveGroup": func(c *client) error {
			_, err := c.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: gid})
			return err
		},
		"TransferOwnership": func(c *client) error {
			_, err := c.Groups.TransferOwnership(ctx, &v1.TransferOwnershipRequest{GroupId: gid, MemberId: target.ID})
			return err
		},
		"SetMemberRole": func(c *client) error {
			_, err := c.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: gid, MemberId: target.ID, Role: v1.GroupRole_GROUP_ROLE_ADMIN})
			return err
		},
		"DissolveGroup": func(c *client) error {
			_, err := c.Groups.DissolveGroup(ctx, &v1.DissolveGroupRequest{GroupId: gid})
			return err
		},
	}
	const (
		nf = connect.CodeNotFound
		pd = connect.CodePermissionDenied
	)
	// Outsiders of an invite-only group cannot tell it exists, except that
	// JoinGroup says joining is not allowed.
	outside := map[string]connect.Code{}
	for name := range calls {
		outside[name] = nf
	}
	outside["JoinGroup"] = pd
	cases := []struct {
		actor string
		c     *client
		want  map[string]connect.Code
	}{
		{"stranger", stranger, outside},
		{"removed member", removed, outside},
		{"member acting as admin or owner", member, map[string]connect.Code{
			"UpdateGroup": pd, "AddGroupMembers": pd, "RemoveGroupMember(target)": pd, "RemoveGroupMember(owner)": pd,
			"RemoveGroupMember(admin2)": pd, "TransferOwnership": pd, "SetMemberRole": pd, "DissolveGroup": pd,
		}},
		{"admin acting as owner", admin, map[string]connect.Code{
			"RemoveGroupMember(owner)": pd, "RemoveGroupMember(admin2)": pd, "TransferOwnership": pd,
			"SetMemberRole": pd, "DissolveGroup": pd,
		}},
	}
	if len(calls) != len(outside) || len(outside) != 12 {
		t.Fatalf("the matrix covers %d calls", len(calls))
	}
	refused := 0
	watch := e.connect(t, target)
	for _, tc := range cases {
		for name, want := range tc.want {
			before := groupState(t, e, gid)
			err := calls[name](tc.c)
			if got := connect.CodeOf(err); err == nil || got != want {
				t.Errorf("%s: %s: got %v, want %v", tc.actor, name, err, want)
			}
			if after := groupState(t, e, gid); after != before {
				t.Fatalf("%s: %s changed the group:\n%s\n%s", tc.actor, name, before, after)
			}
			refused++
		}
	}
	// Nothing refused was pushed: the first event the target sees is the
	// one this final, allowed change makes.
	if _, err := owner.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: gid, Notice: new("still here")}); err != nil {
		t.Fatal(err)
	}
	if ev := watch.next(); ev.GetGroupUpdated().GetNotice() != "still here" {
		t.Fatalf("after %d refused calls the target got %v first", refused, ev)
	}
}

// TestGroupJoinRace races joins and adds past a small size limit: exactly the
// free places are taken, and member_count matches the rows.
func TestGroupJoinRace(t *testing.T) {
	t.Parallel()
	const limit = 5
	e := newEnv(t, withConfig(func(c *server.Config) { c.GroupMaxMembers = limit }))
	ctx := t.Context()
	owner := e.register(t, "owner")
	joiners := registerN(t, e, "joiner", 8)
	invitees := registerN(t, e, "invitee", 4)
	befriend(t, e, owner, invitees...)
	res, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "tiny", JoinPolicy: v1.JoinPolicy_JOIN_POLICY_OPEN})
	if err != nil {
		t.Fatal(err)
	}
	gid := res.GetGroup().GetId()

	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, full int
	record := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		switch connect.CodeOf(err) {
		case connect.CodeResourceExhausted:
			full++
		default:
			if err != nil {
				t.Errorf("unexpected error: %v", err)
				return
			}
			ok++
		}
	}
	for _, j := range joiners {
		wg.Go(func() {
			<-start
			_, err := j.Groups.JoinGroup(ctx, &v1.JoinGroupRequest{GroupId: gid})
			record(err)
		})
	}
	for _, inv := range invitees {
		wg.Go(func() {
			<-start
			_, err := owner.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: gid, MemberIds: []int64{inv.ID}})
			record(err)
		})
	}
	close(start)
	wg.Wait()
	if ok != limit-1 || full != len(joiners)+len(invitees)-(limit-1) {
		t.Fatalf("%d calls succeeded and %d found the group full; want %d and %d", ok, full, limit-1, len(joiners)+len(invitees)-(limit-1))
	}
	if count, rows := memberCounts(t, e, gid); count != limit || rows != limit {
		t.Fatalf("member_count %d, rows %d; want %d", count, rows, limit)
	}
}

// TestGroupTransferRace has every member try to hand ownership to the next,
// all at once, several times: exactly one owner remains, the one groups.owner_id names.
func TestGroupTransferRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner := e.register(t, "owner")
	others := registerN(t, e, "m", 4)
	g := newGroup(t, e, owner, others...)
	ring := append([]*client{owner}, others...)

	var mu sync.Mutex
	transferred := 0
	for range 3 {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, c := range ring {
			next := ring[(i+1)%len(ring)]
			wg.Go(func() {
				<-start
				_, err := c.Groups.TransferOwnership(ctx, &v1.TransferOwnershipRequest{GroupId: g.GetId(), MemberId: next.ID})
				if err != nil && connect.CodeOf(err) != connect.CodePermissionDenied {
					t.Errorf("TransferOwnership: %v", err)
				}
				if err == nil {
					mu.Lock()
					transferred++
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
	}
	if transferred == 0 {
		t.Fatal("no transfer succeeded")
	}
	var owners int
	var ownerID, rowOwner int64
	err := e.Pool.QueryRow(ctx, `
SELECT g.owner_id,
       (SELECT count(*) FROM conversation_members cm WHERE cm.conversation_id = g.conversation_id AND cm.role = 3),
       coalesce((SELECT cm.member_id FROM conversation_members cm WHERE cm.conversation_id = g.conversation_id AND cm.role = 3 LIMIT 1), 0)
FROM groups g WHERE g.id = $1`, g.GetId()).Scan(&ownerID, &owners, &rowOwner)
	if err != nil {
		t.Fatal(err)
	}
	if owners != 1 || rowOwner != ownerID {
		t.Fatalf("%d owners in the rows (%d), groups.owner_id %d", owners, rowOwner, ownerID)
	}
	if count, rows := memberCounts(t, e, g.GetId()); count != 5 || rows != 5 {
		t.Fatalf("member_count %d, rows %d", count, rows)
	}
}

// TestGroupMembersPaging lists a group of 10,001 page by page: every member
// once, in order, and no empty last page.
func TestGroupMembersPaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner := e.register(t, "owner")
	res, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "crowd"})
	if err != nil {
		t.Fatal(err)
	}
	g := res.GetGroup()
	const bulk = 10000
	_, err = e.Pool.Exec(ctx, `
WITH m AS (
    INSERT INTO members (phone, password_hash, nickname)
    SELECT '+1888' || lpad(i::text, 7, '0'), 'x', 'crowd ' || i FROM generate_series(1, $2::int) AS i
    RETURNING id)
INSERT INTO conversation_members (conversation_id, member_id, role) SELECT $1, id, 1 FROM m`, g.GetConversationId(), bulk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Pool.Exec(ctx, `UPDATE groups SET max_members = member_count + $2, member_count = member_count + $2 WHERE id = $1`, g.GetId(), bulk); err != nil {
		t.Fatal(err)
	}

	seen := make(map[int64]bool, bulk+1)
	var last int64
	token, pages := "", 0
	for {
		// 1000 is capped to the largest page, 100.
		page, err := owner.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: g.GetId(), PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		pages++
		if len(page.GetMembers()) == 0 {
			t.Fatalf("page %d is empty", pages)
		}
		for _, m := range page.GetMembers() {
			id := m.GetMember().GetId()
			if seen[id] || id <= last {
				t.Fatalf("member %d repeated or out of order after %d", id, last)
			}
			seen[id], last = true, id
			if id != owner.ID && m.GetMember().GetPhone() != "" {
				t.Fatalf("member %d's phone shown to another member", id)
			}
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(seen) != bulk+1 || pages != (bulk+1+99)/100 {
		t.Fatalf("listed %d members in %d pages; want %d in %d", len(seen), pages, bulk+1, (bulk+1+99)/100)
	}
	// The default page is 20.
	first, err := owner.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: g.GetId()})
	if err != nil || len(first.GetMembers()) != 20 || first.GetNextPageToken() == "" {
		t.Fatalf("default page: %d members, %v", len(first.GetMembers()), err)
	}
}

func TestListMyGroups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, m, other := e.register(t, "owner"), e.register(t, "m"), e.register(t, "other")
	var ids []int64
	for range 5 {
		ids = append(ids, newGroup(t, e, owner, m).GetId())
	}
	newGroup(t, e, other) // not m's
	// m leaves one and another is dissolved: neither is listed.
	if _, err := m.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: ids[1]}); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Groups.DissolveGroup(ctx, &v1.DissolveGroupRequest{GroupId: ids[3]}); err != nil {
		t.Fatal(err)
	}
	want := []int64{ids[0], ids[2], ids[4]}
	var got []int64
	token := ""
	for pages := 1; ; pages++ {
		res, err := m.Groups.ListMyGroups(ctx, &v1.ListMyGroupsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range res.GetGroups() {
			got = append(got, g.GetId())
		}
		if token = res.GetNextPageToken(); token == "" {
			if pages != 2 {
				t.Fatalf("%d pages, want 2", pages)
			}
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ListMyGroups: got %v, want %v", got, want)
	}
	all, err := owner.Groups.ListMyGroups(ctx, &v1.ListMyGroupsRequest{})
	if err != nil || len(all.GetGroups()) != 4 {
		t.Fatalf("owner's groups: %v, %v", all, err)
	}
}

// TestGroupOpenVisibility: an open group shows itself to anyone, but its
// member list stays with its members.
func TestGroupOpenVisibility(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, stranger := e.register(t, "owner"), e.register(t, "stranger")
	res, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "open", JoinPolicy: v1.JoinPolicy_JOIN_POLICY_OPEN})
	if err != nil {
		t.Fatal(err)
	}
	gid := res.GetGroup().GetId()
	got, err := stranger.Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: gid})
	if err != nil || got.GetMyRole() != v1.GroupRole_GROUP_ROLE_UNSPECIFIED || got.GetGroup().GetName() != "open" {
		t.Fatalf("GetGroup by a stranger: %v, %v", got, err)
	}
	before := groupState(t, e, gid)
	_, err = stranger.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: gid})
	wantCode(t, err, connect.CodePermissionDenied)
	_, err = stranger.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: gid, Name: new("mine")})
	wantCode(t, err, connect.CodePermissionDenied)
	_, err = stranger.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: gid})
	wantCode(t, err, connect.CodeNotFound)
	if after := groupState(t, e, gid); after != before {
		t.Fatalf("refused calls changed the group:\n%s\n%s", before, after)
	}
}

// TestGroupAddWaitsForABlockInFlight: adding a member takes the same pair lock
// as ContactService, so a block that is committing while the owner adds its
// author cannot slip in between the add's check and its insert.
func TestGroupAddWaitsForABlockInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, b := e.register(t, "owner"), e.register(t, "b")
	befriend(t, e, owner, b)
	g, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "g"})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}

	// b's BlockMember, caught mid-transaction: it holds the pair's lock.
	tx, err := e.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('karlmalone.contact_pair'),
		hashtext(least($1::bigint, $2::bigint)::text || ':' || greatest($1::bigint, $2::bigint)::text))`, owner.ID, b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2)`, b.ID, owner.ID); err != nil {
		t.Fatal(err)
	}

	added := make(chan error, 1)
	go func() {
		_, err := owner.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: g.GetGroup().GetId(), MemberIds: []int64{b.ID}})
		added <- err
	}()
	// Wait until the add queues behind the lock (or, wrongly, finishes first).
	for waiting := false; !waiting; {
		select {
		case err := <-added:
			t.Fatalf("AddGroupMembers finished (%v) while a block of the pair was in flight", err)
		case <-time.After(5 * time.Millisecond):
		}
		if err := e.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantCode(t, <-added, connect.CodeFailedPrecondition)
}
