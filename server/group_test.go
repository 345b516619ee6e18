package server_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// groupTables are the tables GroupService writes: a refused call leaves them
// as they were.
var groupTables = []string{"groups", "conversations", "conversation_members"}

const (
	roleMember = v1.GroupRole_GROUP_ROLE_MEMBER
	roleAdmin  = v1.GroupRole_GROUP_ROLE_ADMIN
	roleOwner  = v1.GroupRole_GROUP_ROLE_OWNER
)

// registerN registers n members named prefix-0 … prefix-(n-1).
func registerN(t testing.TB, e *env, prefix string, n int) []*client {
	t.Helper()
	out := make([]*client, n)
	for i := range out {
		out[i] = e.register(t, fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

// plantBlock stores a block of blocked by blocker with the query BlockMember
// runs, but leaves their friendship alone. BlockMember ends the friendship
// in the same transaction, so a block between contacts cannot be made
// through the API; tests plant one to check that the block itself, not the
// missing friendship, is what refuses.
func plantBlock(t testing.TB, e *env, blocker, blocked *client) {
	t.Helper()
	if err := db.New(e.Pool).CreateBlock(context.Background(), db.CreateBlockParams{BlockerID: blocker.ID, BlockedID: blocked.ID}); err != nil {
		t.Fatalf("block: %v", err)
	}
}

// membersOf lists the group's members as c sees them, in member id order.
func membersOf(t testing.TB, c *client, groupID int64) []*v1.GroupMember {
	t.Helper()
	var out []*v1.GroupMember
	for _, page := range pages(t, func(token string) (*v1.ListGroupMembersResponse, error) {
		return c.Groups.ListGroupMembers(context.Background(), &v1.ListGroupMembersRequest{GroupId: groupID, PageSize: 100, PageToken: token})
	}) {
		out = append(out, page.GetMembers()...)
	}
	return out
}

// rolesIn maps each member of the group to its role, as c sees them.
func rolesIn(t testing.TB, c *client, groupID int64) map[int64]v1.GroupRole {
	t.Helper()
	out := map[int64]v1.GroupRole{}
	for _, m := range membersOf(t, c, groupID) {
		out[m.GetMember().GetId()] = m.GetRole()
	}
	return out
}

// wantMembers fails unless the group counts n members and lists n.
func wantMembers(t testing.TB, c *client, groupID int64, n int) {
	t.Helper()
	res, err := c.Groups.GetGroup(context.Background(), &v1.GetGroupRequest{GroupId: groupID})
	if err != nil {
		t.Fatalf("GetGroup: %v", err)
	}
	if count, listed := res.GetGroup().GetMemberCount(), len(membersOf(t, c, groupID)); count != int32(n) || listed != n {
		t.Fatalf("member_count %d, %d members listed; want %d", count, listed, n)
	}
}

// memberChange is a membership event about member in group g, by actor.
func memberChange(g, member, actor int64, role v1.GroupRole) *v1.GroupMemberChange {
	return &v1.GroupMemberChange{GroupId: g, MemberId: member, ActorId: actor, Role: role}
}

func TestGroupCreate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, a, b := e.register(t, "owner"), e.register(t, "a"), e.register(t, "b")
	makeContacts(t, owner, a)
	makeContacts(t, owner, b)
	var g *v1.Group

	step(t, "CreateGroup answers with the group, its owner and members in it", func(t *testing.T) {
		res, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{
			Name: "  Jazz fans  ", MemberIds: []int64{a.ID, b.ID},
			Avatar: "https://img.example/jazz.png", Notice: "Be nice.",
		})
		if err != nil {
			t.Fatalf("CreateGroup: %v", err)
		}
		g = res.GetGroup()
		if g.GetId() == 0 || g.GetConversationId() == 0 {
			t.Fatalf("CreateGroup returned no id or conversation: %v", g)
		}
		wantProto(t, "CreateGroup", &v1.Group{
			Id: g.GetId(), ConversationId: g.GetConversationId(), Name: "Jazz fans", OwnerId: owner.ID, MemberCount: 3,
			JoinPolicy: v1.JoinPolicy_JOIN_POLICY_INVITE_ONLY, MaxMembers: int32(server.DefaultConfig().GroupMaxMembers),
			Avatar: "https://img.example/jazz.png", Notice: "Be nice.", CreatedAt: set,
		}, g, anyTime)
		wantMembers(t, owner, g.GetId(), 3)
		wantProto(t, "roles", map[int64]v1.GroupRole{owner.ID: roleOwner, a.ID: roleMember, b.ID: roleMember}, rolesIn(t, owner, g.GetId()))
	})

	step(t, "each member reads it with its own role, over gRPC too", func(t *testing.T) {
		got, err := e.grpcClients(a.Token).Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: g.GetId()})
		if err != nil {
			t.Fatalf("GetGroup: %v", err)
		}
		wantProto(t, "GetGroup as a member", &v1.GetGroupResponse{Group: g, MyRole: roleMember}, got)
		owned, err := owner.Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: g.GetId()})
		if err != nil {
			t.Fatalf("GetGroup as owner: %v", err)
		}
		wantProto(t, "GetGroup as the owner", &v1.GetGroupResponse{Group: g, MyRole: roleOwner}, owned)
	})

	step(t, "members list each other without phones, but their own", func(t *testing.T) {
		list, err := b.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: g.GetId()})
		if err != nil {
			t.Fatalf("ListGroupMembers: %v", err)
		}
		self := b.public()
		self.Phone = b.Phone
		wantProto(t, "ListGroupMembers", &v1.ListGroupMembersResponse{Members: []*v1.GroupMember{
			{Member: owner.public(), Role: roleOwner, JoinedAt: set},
			{Member: a.public(), Role: roleMember, JoinedAt: set},
			{Member: self, Role: roleMember, JoinedAt: set},
		}}, list, anyTime)
	})
}

// TestGroupCreateJSON posts JSON the way curl does.
func TestGroupCreateJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	owner, a := e.register(t, "owner"), e.register(t, "a")
	makeContacts(t, owner, a)
	const create = "/karlmalone.v1.GroupService/CreateGroup"

	status, out, raw := e.postJSON(t, create, owner.Token, fmt.Sprintf(`{"name":"Curl crew","memberIds":["%d"],"joinPolicy":"JOIN_POLICY_OPEN"}`, a.ID))
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, raw)
	}
	g, _ := out["group"].(map[string]any)
	wantFields(t, "group", map[string]any{"ownerId": fmt.Sprint(owner.ID), "memberCount": float64(2), "joinPolicy": "JOIN_POLICY_OPEN"}, g)
	if id, ok := g["id"].(string); !ok || id == "" {
		t.Fatalf("group id %v, want an int64 as a JSON string", g["id"])
	}

	status, out, raw = e.postJSON(t, create, owner.Token, `{"name":"","memberIds":["0"]}`)
	msg, _ := out["message"].(string)
	if status != http.StatusBadRequest || out["code"] != "invalid_argument" || !strings.Contains(msg, "name") || !strings.Contains(msg, "member_ids") {
		t.Fatalf("bad request: status %d, %s", status, raw)
	}
}

func TestGroupCreateRefusesMembers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) { c.GroupMaxMembers = 3 }))
	ctx := t.Context()
	owner, friend, stranger, blocker, blocked := e.register(t, "owner"), e.register(t, "friend"),
		e.register(t, "stranger"), e.register(t, "blocker"), e.register(t, "blocked")
	for _, c := range []*client{friend, blocker, blocked} {
		makeContacts(t, owner, c)
	}
	plantBlock(t, e, blocker, owner) // blocker blocked the owner while still a contact
	plantBlock(t, e, owner, blocked) // and the owner blocked someone

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
	before := e.dbSnapshot(t, groupTables...)
	for _, tc := range cases {
		_, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "g", MemberIds: tc.ids})
		wantCode(t, err, tc.code)
		if !strings.Contains(err.Error(), tc.in) {
			t.Errorf("%s: error %q does not mention %q", tc.name, err, tc.in)
		}
	}
	before.wantUnchanged(t, "refused creates")
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
	gid := newGroup(t, owner, a).GetId()
	long := strings.Repeat("é", 65)
	gc := owner.Groups
	cases := []struct {
		name  string
		call  func() error
		field string
	}{
		{"create: empty name", call(gc.CreateGroup, &v1.CreateGroupRequest{Name: "   "}), "name"},
		{"create: 65-rune name", call(gc.CreateGroup, &v1.CreateGroupRequest{Name: long}), "name"},
		{"create: long notice", call(gc.CreateGroup, &v1.CreateGroupRequest{Name: "x", Notice: strings.Repeat("n", 1025)}), "notice"},
		{"create: avatar not http", call(gc.CreateGroup, &v1.CreateGroupRequest{Name: "x", Avatar: "ftp://x/y.png"}), "avatar"},
		{"create: repeated member", call(gc.CreateGroup, &v1.CreateGroupRequest{Name: "x", MemberIds: []int64{a.ID, a.ID}}), "member_ids"},
		{"create: member id 0", call(gc.CreateGroup, &v1.CreateGroupRequest{Name: "x", MemberIds: []int64{0}}), "member_ids"},
		{"create: unknown join policy", call(gc.CreateGroup, &v1.CreateGroupRequest{Name: "x", JoinPolicy: 7}), "join_policy"},
		{"get: group_id 0", call(gc.GetGroup, &v1.GetGroupRequest{}), "group_id"},
		{"update: group_id -1", call(gc.UpdateGroup, &v1.UpdateGroupRequest{GroupId: -1, Name: new("x")}), "group_id"},
		{"update: empty name", call(gc.UpdateGroup, &v1.UpdateGroupRequest{GroupId: gid, Name: new(" ")}), "name"},
		{"update: long name", call(gc.UpdateGroup, &v1.UpdateGroupRequest{GroupId: gid, Name: new(long)}), "name"},
		{"update: long notice", call(gc.UpdateGroup, &v1.UpdateGroupRequest{GroupId: gid, Notice: new(strings.Repeat("n", 1025))}), "notice"},
		{"update: unspecified join policy", call(gc.UpdateGroup, &v1.UpdateGroupRequest{GroupId: gid, JoinPolicy: new(v1.JoinPolicy_JOIN_POLICY_UNSPECIFIED)}), "join_policy"},
		{"list members: group_id 0", call(gc.ListGroupMembers, &v1.ListGroupMembersRequest{}), "group_id"},
		{"list members: negative page size", call(gc.ListGroupMembers, &v1.ListGroupMembersRequest{GroupId: gid, PageSize: -1}), "page_size"},
		{"list members: forged token", call(gc.ListGroupMembers, &v1.ListGroupMembersRequest{GroupId: gid, PageToken: "not-a-token"}), "page_token"},
		{"list my groups: forged token", call(gc.ListMyGroups, &v1.ListMyGroupsRequest{PageToken: "%%%"}), "page_token"},
		{"add: group_id 0", call(gc.AddGroupMembers, &v1.AddGroupMembersRequest{MemberIds: []int64{a.ID}}), "group_id"},
		{"add: no members", call(gc.AddGroupMembers, &v1.AddGroupMembersRequest{GroupId: gid}), "member_ids"},
		{"add: member id -5", call(gc.AddGroupMembers, &v1.AddGroupMembersRequest{GroupId: gid, MemberIds: []int64{-5}}), "member_ids"},
		{"remove: member_id 0", call(gc.RemoveGroupMember, &v1.RemoveGroupMemberRequest{GroupId: gid}), "member_id"},
		{"remove: yourself", call(gc.RemoveGroupMember, &v1.RemoveGroupMemberRequest{GroupId: gid, MemberId: owner.ID}), "member_id"},
		{"join: group_id 0", call(gc.JoinGroup, &v1.JoinGroupRequest{}), "group_id"},
		{"leave: group_id 0", call(gc.LeaveGroup, &v1.LeaveGroupRequest{}), "group_id"},
		{"transfer: member_id -1", call(gc.TransferOwnership, &v1.TransferOwnershipRequest{GroupId: gid, MemberId: -1}), "member_id"},
		{"transfer: to yourself", call(gc.TransferOwnership, &v1.TransferOwnershipRequest{GroupId: gid, MemberId: owner.ID}), "member_id"},
		{"set role: owner", call(gc.SetMemberRole, &v1.SetMemberRoleRequest{GroupId: gid, MemberId: a.ID, Role: roleOwner}), "role"},
		{"set role: group_id 0", call(gc.SetMemberRole, &v1.SetMemberRoleRequest{MemberId: a.ID, Role: roleAdmin}), "group_id"},
		{"dissolve: group_id 0", call(gc.DissolveGroup, &v1.DissolveGroupRequest{}), "group_id"},
	}
	before := e.dbSnapshot(t, groupTables...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantInvalid(t, tc.call(), tc.field) })
	}
	before.wantUnchanged(t, "invalid requests")
	// 64 runes is allowed, however many bytes they take.
	if _, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: long[len("é"):]}); err != nil {
		t.Fatalf("CreateGroup with a 64-rune name: %v", err)
	}
}

// groupCalls is one call of each GroupService method on group gid (acting on
// member, where the method takes one), as c.
func groupCalls(gid, member int64) map[string]func(c *client) error {
	return map[string]func(c *client) error{
		"GetGroup": func(c *client) error { return call(c.Groups.GetGroup, &v1.GetGroupRequest{GroupId: gid})() },
		"UpdateGroup": func(c *client) error {
			return call(c.Groups.UpdateGroup, &v1.UpdateGroupRequest{GroupId: gid, Name: new("hacked"), JoinPolicy: new(v1.JoinPolicy_JOIN_POLICY_OPEN)})()
		},
		"ListGroupMembers": func(c *client) error {
			return call(c.Groups.ListGroupMembers, &v1.ListGroupMembersRequest{GroupId: gid})()
		},
		"AddGroupMembers": func(c *client) error {
			return call(c.Groups.AddGroupMembers, &v1.AddGroupMembersRequest{GroupId: gid, MemberIds: []int64{member}})()
		},
		"RemoveGroupMember": func(c *client) error {
			return call(c.Groups.RemoveGroupMember, &v1.RemoveGroupMemberRequest{GroupId: gid, MemberId: member})()
		},
		"JoinGroup":  func(c *client) error { return call(c.Groups.JoinGroup, &v1.JoinGroupRequest{GroupId: gid})() },
		"LeaveGroup": func(c *client) error { return call(c.Groups.LeaveGroup, &v1.LeaveGroupRequest{GroupId: gid})() },
		"TransferOwnership": func(c *client) error {
			return call(c.Groups.TransferOwnership, &v1.TransferOwnershipRequest{GroupId: gid, MemberId: member})()
		},
		"SetMemberRole": func(c *client) error {
			return call(c.Groups.SetMemberRole, &v1.SetMemberRoleRequest{GroupId: gid, MemberId: member, Role: roleAdmin})()
		},
		"DissolveGroup": func(c *client) error { return call(c.Groups.DissolveGroup, &v1.DissolveGroupRequest{GroupId: gid})() },
	}
}

// TestGroupUnknownIDs: ids of no group, and of a dissolved one, are not found
// for every method.
func TestGroupUnknownIDs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, a, b := e.register(t, "owner"), e.register(t, "a"), e.register(t, "b")
	dissolved := newGroup(t, owner, a, b)
	if _, err := owner.Groups.DissolveGroup(ctx, &v1.DissolveGroupRequest{GroupId: dissolved.GetId()}); err != nil {
		t.Fatalf("DissolveGroup: %v", err)
	}
	makeContacts(t, a, b)
	for _, gid := range []int64{dissolved.GetId(), 987654321} {
		calls := groupCalls(gid, b.ID)
		if len(calls) != 10 {
			t.Fatalf("%d calls, want every method but CreateGroup and ListMyGroups", len(calls))
		}
		for _, c := range []*client{owner, a} {
			for name, call := range calls {
				if err := call(c); connect.CodeOf(err) != connect.CodeNotFound {
					t.Errorf("%s(group %d) by member %d: got %v, want not_found", name, gid, c.ID, err)
				}
			}
		}
	}
	// The group's conversation kept no members: chat refuses it to everyone.
	for _, c := range []*client{owner, a} {
		_, err := c.Chat.ListMessages(ctx, &v1.ListMessagesRequest{ConversationId: dissolved.GetConversationId()})
		wantCode(t, err, connect.CodeNotFound)
	}
	if rows := e.dbRows(t, "conversation_members", "conversation_id = $1", dissolved.GetConversationId()); len(rows) != 0 {
		t.Fatalf("dissolved group's conversation keeps members: %v", rows)
	}
	if rows := e.dbRows(t, "groups", "id = $1 AND member_count = 0", dissolved.GetId()); len(rows) != 1 {
		t.Fatalf("dissolved group's member_count is not 0: %v", e.dbRows(t, "groups", "id = $1", dissolved.GetId()))
	}
	// Unknown members to add or act on are not found either.
	live := newGroup(t, owner, a)
	_, err := owner.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: live.GetId(), MemberIds: []int64{987654321}})
	wantCode(t, err, connect.CodeNotFound)
	_, err = owner.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: live.GetId(), MemberId: 987654321})
	wantCode(t, err, connect.CodeNotFound)
	_, err = owner.Groups.TransferOwnership(ctx, &v1.TransferOwnershipRequest{GroupId: live.GetId(), MemberId: b.ID})
	wantCode(t, err, connect.CodeNotFound)
	_, err = owner.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: live.GetId(), MemberId: b.ID, Role: roleAdmin})
	wantCode(t, err, connect.CodeNotFound)
}

// TestGroupLifecycleEvents walks the membership changes and checks that each
// is pushed to the right devices and that member_count follows the members.
func TestGroupLifecycleEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, admin, m, newbie, joiner := e.register(t, "owner"), e.register(t, "admin"), e.register(t, "m"),
		e.register(t, "newbie"), e.register(t, "joiner")
	makeContacts(t, owner, admin)
	makeContacts(t, owner, m)
	makeContacts(t, admin, newbie)
	makeContacts(t, admin, m)
	mEvents := e.connect(t, m)
	newbieEvents := e.connect(t, newbie)
	var created *v1.Group
	var gid int64

	step(t, "the members hear of the new group", func(t *testing.T) {
		res, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "crew", MemberIds: []int64{admin.ID, m.ID}})
		if err != nil {
			t.Fatalf("CreateGroup: %v", err)
		}
		created, gid = res.GetGroup(), res.GetGroup().GetId()
		wantProto(t, "group_created", &v1.Event{At: set, Kind: &v1.Event_GroupCreated{GroupCreated: res.GetGroup()}},
			mEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetGroupCreated() != nil }), anyTime)
	})

	step(t, "the owner makes an admin, and may not step down or leave", func(t *testing.T) {
		if _, err := owner.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: gid, MemberId: admin.ID, Role: roleAdmin}); err != nil {
			t.Fatalf("SetMemberRole: %v", err)
		}
		ev := mEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetMemberRoleChanged() != nil })
		wantProto(t, "member_role_changed", memberChange(gid, admin.ID, owner.ID, roleAdmin), ev.GetMemberRoleChanged())
		_, err := owner.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: gid, MemberId: owner.ID, Role: roleMember})
		wantCode(t, err, connect.CodeFailedPrecondition)
		_, err = owner.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: gid})
		wantCode(t, err, connect.CodeFailedPrecondition)
	})

	step(t, "an admin updates part of the group and members hear of it", func(t *testing.T) {
		up, err := admin.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: gid, Name: new("crew 2"), JoinPolicy: new(v1.JoinPolicy_JOIN_POLICY_OPEN)})
		if err != nil {
			t.Fatalf("UpdateGroup: %v", err)
		}
		// The fields not in the request stay as they were.
		want := proto.CloneOf(created)
		want.Name, want.JoinPolicy = "crew 2", v1.JoinPolicy_JOIN_POLICY_OPEN
		wantProto(t, "UpdateGroup", want, up.GetGroup())
		ev := mEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetGroupUpdated() != nil })
		wantProto(t, "group_updated", want, ev.GetGroupUpdated())
	})

	step(t, "an admin adds its contact, skipping a member", func(t *testing.T) {
		add, err := admin.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: gid, MemberIds: []int64{newbie.ID, m.ID}})
		if err != nil {
			t.Fatalf("AddGroupMembers: %v", err)
		}
		wantProto(t, "added", []*v1.GroupMember{{Member: newbie.public(), Role: roleMember, JoinedAt: set}}, add.GetAdded(), anyTime)
		if add.GetGroup().GetMemberCount() != 4 {
			t.Fatalf("AddGroupMembers returned %v", add.GetGroup())
		}
		wantMembers(t, m, gid, 4)
		for _, evs := range []*events{mEvents, newbieEvents} {
			ev := evs.nextWhere(func(ev *v1.Event) bool { return ev.GetMembersAdded() != nil })
			wantProto(t, "members_added", &v1.GroupMembersAdded{GroupId: gid, MemberIds: []int64{newbie.ID}, ActorId: admin.ID}, ev.GetMembersAdded())
		}
	})

	step(t, "anyone joins the open group, once", func(t *testing.T) {
		if _, err := joiner.Groups.JoinGroup(ctx, &v1.JoinGroupRequest{GroupId: gid}); err != nil {
			t.Fatalf("JoinGroup: %v", err)
		}
		_, err := joiner.Groups.JoinGroup(ctx, &v1.JoinGroupRequest{GroupId: gid})
		wantCode(t, err, connect.CodeAlreadyExists)
		wantMembers(t, m, gid, 5)
		ev := mEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetMemberJoined() != nil })
		wantProto(t, "member_joined", memberChange(gid, joiner.ID, joiner.ID, roleMember), ev.GetMemberJoined())
	})

	step(t, "an admin removes a member, whose own device hears of it", func(t *testing.T) {
		if _, err := admin.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: gid, MemberId: newbie.ID}); err != nil {
			t.Fatalf("RemoveGroupMember: %v", err)
		}
		wantMembers(t, m, gid, 4)
		for _, evs := range []*events{mEvents, newbieEvents} {
			ev := evs.nextWhere(func(ev *v1.Event) bool { return ev.GetMemberRemoved() != nil })
			wantProto(t, "member_removed", memberChange(gid, newbie.ID, admin.ID, 0), ev.GetMemberRemoved())
		}
		_, err := newbie.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: gid})
		wantCode(t, err, connect.CodePermissionDenied) // open group: visible, but members only
	})

	step(t, "a member leaves", func(t *testing.T) {
		if _, err := joiner.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: gid}); err != nil {
			t.Fatalf("LeaveGroup: %v", err)
		}
		wantMembers(t, m, gid, 3)
		ev := mEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetMemberLeft() != nil })
		wantProto(t, "member_left", memberChange(gid, joiner.ID, joiner.ID, 0), ev.GetMemberLeft())
	})

	step(t, "ownership moves and the old owner, now an admin, may leave", func(t *testing.T) {
		tr, err := owner.Groups.TransferOwnership(ctx, &v1.TransferOwnershipRequest{GroupId: gid, MemberId: m.ID})
		if err != nil {
			t.Fatalf("TransferOwnership: %v", err)
		}
		if tr.GetGroup().GetOwnerId() != m.ID {
			t.Fatalf("after transfer: %v", tr.GetGroup())
		}
		wantProto(t, "roles after the transfer", map[int64]v1.GroupRole{owner.ID: roleAdmin, admin.ID: roleAdmin, m.ID: roleOwner}, rolesIn(t, m, gid))
		ev := mEvents.nextWhere(func(ev *v1.Event) bool { return ev.GetMemberRoleChanged().GetRole() == roleOwner })
		wantProto(t, "member_role_changed", memberChange(gid, m.ID, owner.ID, roleOwner), ev.GetMemberRoleChanged())
		if _, err := owner.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: gid}); err != nil {
			t.Fatalf("LeaveGroup by the old owner: %v", err)
		}
		wantMembers(t, m, gid, 2)
	})

	step(t, "the new owner dissolves it and every former member hears of it", func(t *testing.T) {
		adminEvents := e.connect(t, admin)
		if _, err := m.Groups.DissolveGroup(ctx, &v1.DissolveGroupRequest{GroupId: gid}); err != nil {
			t.Fatalf("DissolveGroup: %v", err)
		}
		for _, evs := range []*events{mEvents, adminEvents} {
			ev := evs.nextWhere(func(ev *v1.Event) bool { return ev.GetGroupDissolved() != nil })
			wantProto(t, "group_dissolved", &v1.GroupDissolved{GroupId: gid}, ev.GetGroupDissolved())
		}
		_, err := m.Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: gid})
		wantCode(t, err, connect.CodeNotFound)
	})
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
	gid := newGroup(t, owner, admin, admin2, member, target, removed).GetId()
	for _, c := range []*client{admin, admin2} {
		if _, err := owner.Groups.SetMemberRole(ctx, &v1.SetMemberRoleRequest{GroupId: gid, MemberId: c.ID, Role: roleAdmin}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := owner.Groups.RemoveGroupMember(ctx, &v1.RemoveGroupMemberRequest{GroupId: gid, MemberId: removed.ID}); err != nil {
		t.Fatal(err)
	}
	// Everyone may invite the outsider, so a refusal is about the role alone.
	for _, c := range []*client{admin, member, removed, stranger} {
		makeContacts(t, c, outsider)
	}

	calls := groupCalls(gid, target.ID)
	calls["AddGroupMembers"] = groupCalls(gid, outsider.ID)["AddGroupMembers"]
	calls["RemoveGroupMember(target)"] = calls["RemoveGroupMember"]
	delete(calls, "RemoveGroupMember")
	calls["RemoveGroupMember(owner)"] = groupCalls(gid, owner.ID)["RemoveGroupMember"]
	calls["RemoveGroupMember(admin2)"] = groupCalls(gid, admin2.ID)["RemoveGroupMember"]
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
			before := e.dbSnapshot(t, groupTables...)
			err := calls[name](tc.c)
			if got := connect.CodeOf(err); err == nil || got != want {
				t.Errorf("%s: %s: got %v, want %v", tc.actor, name, err, want)
			}
			before.wantUnchanged(t, tc.actor+": "+name)
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
// free places are taken, and member_count matches the members.
func TestGroupJoinRace(t *testing.T) {
	t.Parallel()
	const limit = 5
	e := newEnv(t, withConfig(func(c *server.Config) { c.GroupMaxMembers = limit }))
	ctx := t.Context()
	owner := e.register(t, "owner")
	joiners := registerN(t, e, "joiner", 8)
	invitees := registerN(t, e, "invitee", 4)
	for _, c := range invitees {
		makeContacts(t, owner, c)
	}
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
	wantMembers(t, owner, gid, limit)
}

// TestGroupTransferRace has every member try to hand ownership to the next,
// all at once, several times: exactly one owner remains, the one the group
// names.
func TestGroupTransferRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner := e.register(t, "owner")
	others := registerN(t, e, "m", 4)
	g := newGroup(t, owner, others...)
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
	got, err := owner.Groups.GetGroup(ctx, &v1.GetGroupRequest{GroupId: g.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var owners []int64
	for id, role := range rolesIn(t, owner, g.GetId()) {
		if role == roleOwner {
			owners = append(owners, id)
		}
	}
	if !slices.Equal(owners, []int64{got.GetGroup().GetOwnerId()}) {
		t.Fatalf("members with the owner role: %v; the group's owner: %d", owners, got.GetGroup().GetOwnerId())
	}
	wantMembers(t, owner, g.GetId(), 5)
}

func TestListMyGroups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, m, other := e.register(t, "owner"), e.register(t, "m"), e.register(t, "other")
	var ids []int64
	for range 5 {
		ids = append(ids, newGroup(t, owner, m).GetId())
	}
	newGroup(t, other) // not m's
	// m leaves one and another is dissolved: neither is listed.
	if _, err := m.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: ids[1]}); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Groups.DissolveGroup(ctx, &v1.DissolveGroupRequest{GroupId: ids[3]}); err != nil {
		t.Fatal(err)
	}
	ps := pages(t, func(token string) (*v1.ListMyGroupsResponse, error) {
		return m.Groups.ListMyGroups(ctx, &v1.ListMyGroupsRequest{PageSize: 2, PageToken: token})
	})
	if len(ps) != 2 {
		t.Fatalf("%d pages, want 2", len(ps))
	}
	var got []int64
	for _, p := range ps {
		for _, g := range p.GetGroups() {
			got = append(got, g.GetId())
		}
	}
	if want := []int64{ids[0], ids[2], ids[4]}; !slices.Equal(got, want) {
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
	if err != nil {
		t.Fatalf("GetGroup by a stranger: %v", err)
	}
	wantProto(t, "GetGroup by a stranger", &v1.GetGroupResponse{Group: res.GetGroup()}, got)
	before := e.dbSnapshot(t, groupTables...)
	_, err = stranger.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: gid})
	wantCode(t, err, connect.CodePermissionDenied)
	_, err = stranger.Groups.UpdateGroup(ctx, &v1.UpdateGroupRequest{GroupId: gid, Name: new("mine")})
	wantCode(t, err, connect.CodePermissionDenied)
	_, err = stranger.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: gid})
	wantCode(t, err, connect.CodeNotFound)
	before.wantUnchanged(t, "refused calls")
}

// TestGroupAddWaitsForABlockInFlight: adding a member takes the same pair lock
// as ContactService, so a block that is committing while the owner adds its
// author cannot slip in between the add's check and its insert.
func TestGroupAddWaitsForABlockInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, b := e.register(t, "owner"), e.register(t, "b")
	makeContacts(t, owner, b)
	g, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "g"})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}

	// b's BlockMember, caught mid-transaction (which no call can be made to
	// do): it holds the pair's lock and has stored the block, through the
	// queries BlockMember runs.
	tx, err := e.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	q := db.New(tx)
	if err := q.LockContactPair(ctx, db.LockContactPairParams{A: b.ID, B: owner.ID}); err != nil {
		t.Fatal(err)
	}
	if err := q.CreateBlock(ctx, db.CreateBlockParams{BlockerID: b.ID, BlockedID: owner.ID}); err != nil {
		t.Fatal(err)
	}

	added := make(chan error, 1)
	go func() {
		_, err := owner.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: g.GetGroup().GetId(), MemberIds: []int64{b.ID}})
		added <- err
	}()
	// Wait until the add queues behind the lock (or, wrongly, finishes
	// first). Only the database can tell that a session waits for a lock.
	waitFor(t, "the add to wait for the pair's lock", func() bool {
		select {
		case err := <-added:
			t.Fatalf("AddGroupMembers finished (%v) while a block of the pair was in flight", err)
		default:
		}
		var waiting bool
		if err := e.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantCode(t, <-added, connect.CodeFailedPrecondition)
}

// TestGroupAddMembersOneEvent: adding n members is one members_added event
// per socket, listing them all, not n events to each of the members (which
// made a large add O(n²) deliveries).
func TestGroupAddMembersOneEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner, old := e.register(t, "owner"), e.register(t, "old")
	g := newGroup(t, owner, old)
	added := registerN(t, e, "added", 6)
	var ids []int64
	for _, c := range added {
		makeContacts(t, owner, c)
		ids = append(ids, c.ID)
	}
	sockets := []*events{e.connect(t, owner), e.connect(t, owner), e.connect(t, old)}
	for _, c := range added {
		sockets = append(sockets, e.connect(t, c))
	}
	if _, err := owner.Groups.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: g.GetId(), MemberIds: ids}); err != nil {
		t.Fatalf("AddGroupMembers: %v", err)
	}
	// A message after the add marks the end: between the two, nothing else.
	msg := chatSend(t, owner, groupText(g.GetId(), "after", "welcome"))
	want := &v1.GroupMembersAdded{GroupId: g.GetId(), MemberIds: ids, ActorId: owner.ID}
	for i, evs := range sockets {
		ev := evs.next()
		if ev.GetMembersAdded() == nil {
			t.Fatalf("socket %d: first event %v, want members_added", i, ev)
		}
		wantProto(t, "members_added", want, ev.GetMembersAdded())
		if ev := evs.next(); ev.GetMessage().GetSeq() != msg.GetSeq() {
			t.Fatalf("socket %d: after members_added got %v, want only the message", i, ev)
		}
	}
}
