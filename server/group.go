package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/store"
)

// GroupServer implements GroupService.
//
// A group's members are the conversation_members rows of its conversation, so
// ChatService authorizes group messages with the same rows. Every write to a
// group's membership or roles goes through changeGroup: one transaction that
// first locks the group row (LockGroup), so writes to one group are
// serialized and the role checks that follow the lock cannot go stale. The
// size limit is enforced by a conditional UPDATE of member_count (and the
// table's CHECK behind it).
//
// Visibility: a member sees its group; anyone sees an open group; an
// invite-only group is not found for non-members, like a dissolved one. The
// one exception is JoinGroup, whose caller is an outsider by definition: it
// answers permission_denied for an invite-only group.
type GroupServer struct {
	*base
}

var _ karlmalonev1connect.GroupServiceHandler = (*GroupServer)(nil)

var (
	errGroupFull          = connect.NewError(connect.CodeResourceExhausted, errors.New("the group is full"))
	errTargetNotInGroup   = connect.NewError(connect.CodeNotFound, errors.New("member_id: not a member of this group"))
	errOwnerMustTransfer  = connect.NewError(connect.CodeFailedPrecondition, errors.New("the owner cannot leave: transfer ownership first"))
	errTargetIsOwner      = connect.NewError(connect.CodeFailedPrecondition, errors.New("member_id: is the owner; use TransferOwnership"))
	errAlreadyGroupMember = connect.NewError(connect.CodeAlreadyExists, errors.New("already a member of this group"))
)

type groupIDParams struct {
	GroupID int64 `name:"group_id" validate:"gt=0"`
}

type groupTargetParams struct {
	GroupID  int64 `name:"group_id" validate:"gt=0"`
	MemberID int64 `name:"member_id" validate:"gt=0"`
}

// groupTx is one change to a group, inside the transaction changeGroup runs.
type groupTx struct {
	q    *db.Queries
	g    db.Group // the locked row; a change that rewrites it stores the new row here
	me   int64    // the caller
	role int16    // the caller's role; store.RoleNone: not a member
	to   []int64  // who hears of the change, once read (hearers)
	read bool     // whether to is read
	// events are published to the hearers after the commit, in order.
	events []*v1.Event
}

// hearers reads who hears of the change now, before a change that removes
// some of them: by default they are read when the change is done.
func (t *groupTx) hearers(ctx context.Context) ([]int64, error) {
	ids, err := t.q.ListConversationMemberIDs(ctx, t.g.ConversationID)
	if err != nil {
		return nil, fmt.Errorf("list group members: %w", err)
	}
	t.to, t.read = ids, true
	return ids, nil
}

// tell queues events for after the commit.
func (t *groupTx) tell(evs ...*v1.Event) { t.events = append(t.events, evs...) }

// anyone, as changeGroup's minRole, lets outsiders of an invite-only group
// through to the change (JoinGroup answers them itself).
const anyone int16 = -1

// changeGroup is the skeleton of every write to a group: in one transaction
// it locks the live group, reads the caller's role, refuses a caller who may
// not see the group (not found) or ranks below minRole (permission denied),
// runs change, and reads who hears of it; after the commit it publishes the
// events change queued. It returns the group as change left it.
func (s *GroupServer) changeGroup(ctx context.Context, groupID int64, minRole int16, change func(t *groupTx) error) (db.Group, error) {
	t := &groupTx{me: callerFrom(ctx).MemberID}
	err := s.store.InTx(ctx, func(q *db.Queries) error {
		t.q = q
		var err error
		if t.g, err = q.LockGroup(ctx, groupID); err != nil {
			return fmt.Errorf("lock group: %w", err)
		}
		if t.role, err = memberRole(ctx, q, t.g, t.me); err != nil {
			return err
		}
		if minRole != anyone {
			if err := mayChange(t.g, t.role, minRole); err != nil {
				return err
			}
		}
		if err := change(t); err != nil {
			return err
		}
		if len(t.events) > 0 && !t.read {
			_, err = t.hearers(ctx)
		}
		return err
	})
	if err != nil {
		return db.Group{}, err
	}
	for _, ev := range t.events {
		s.publish(t.to, ev)
	}
	return t.g, nil
}

// mayChange refuses a change to g by a caller with role that needs minRole.
func mayChange(g db.Group, role, minRole int16) error {
	if err := maySee(g, role); err != nil {
		return err
	}
	if role < minRole {
		return errPermission
	}
	return nil
}

// maySee hides an invite-only group from its outsiders.
func maySee(g db.Group, role int16) error {
	if role == store.RoleNone && g.JoinPolicy != store.PolicyOpen {
		return errNotFound
	}
	return nil
}

// memberRole is the member's role in g, store.RoleNone when not a member.
func memberRole(ctx context.Context, q *db.Queries, g db.Group, memberID int64) (int16, error) {
	m, err := q.GetConversationMember(ctx, db.GetConversationMemberParams{ConversationID: g.ConversationID, MemberID: memberID})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.RoleNone, nil
	case err != nil:
		return 0, fmt.Errorf("get group member: %w", err)
	}
	return m.Role, nil
}

// viewGroup reads a live group the caller may see, with the caller's role.
func (s *GroupServer) viewGroup(ctx context.Context, groupID int64) (db.Group, int16, error) {
	g, err := s.q.GetGroupByID(ctx, groupID)
	if err != nil {
		return g, 0, fmt.Errorf("get group: %w", err)
	}
	role, err := memberRole(ctx, s.q, g, callerFrom(ctx).MemberID)
	if err == nil {
		err = maySee(g, role)
	}
	return g, role, err
}

type createGroupParams struct {
	Name       string  `name:"name" validate:"text,required,max=64"`
	Avatar     string  `name:"avatar" validate:"omitempty,text,max=512,http_url"`
	Notice     string  `name:"notice" validate:"text,max=1024"`
	MemberIDs  []int64 `name:"member_ids" validate:"unique,dive,gt=0"`
	JoinPolicy int32   `name:"join_policy" validate:"oneof=0 1 2"`
}

func (s *GroupServer) CreateGroup(ctx context.Context, req *v1.CreateGroupRequest) (*v1.CreateGroupResponse, error) {
	me := callerFrom(ctx).MemberID
	p := createGroupParams{
		Name: strings.TrimSpace(req.GetName()), Avatar: req.GetAvatar(), Notice: req.GetNotice(),
		MemberIDs: req.GetMemberIds(), JoinPolicy: int32(req.GetJoinPolicy()),
	}
	if err := s.checkMemberIDs(p.MemberIDs, s.cfg.GroupMaxMembers-1); err != nil {
		return nil, err
	}
	if err := check(p); err != nil {
		return nil, err
	}
	if slices.Contains(p.MemberIDs, me) {
		return nil, invalid("member_ids: must not include you (you become the owner)")
	}
	policy := int16(p.JoinPolicy)
	if policy == 0 {
		policy = store.PolicyInviteOnly
	}
	var g db.Group
	var ids []int64
	err := s.store.InTx(ctx, func(q *db.Queries) error {
		var err error
		// Conversation 0 does not exist: nobody is "already a member".
		if ids, err = checkInvitees(ctx, q, me, 0, p.MemberIDs); err != nil {
			return err
		}
		conv, err := q.CreateGroupConversation(ctx)
		if err != nil {
			return fmt.Errorf("create group conversation: %w", err)
		}
		g, err = q.CreateGroup(ctx, db.CreateGroupParams{
			Name: p.Name, Avatar: p.Avatar, Notice: p.Notice, OwnerID: me, JoinPolicy: policy,
			MemberCount: int32(1 + len(ids)), MaxMembers: int32(s.cfg.GroupMaxMembers), ConversationID: conv.ID,
		})
		if err != nil {
			return fmt.Errorf("create group: %w", err)
		}
		err = q.AddConversationMember(ctx, db.AddConversationMemberParams{ConversationID: conv.ID, MemberID: me, Role: store.RoleOwner})
		if err != nil {
			return fmt.Errorf("add group owner: %w", err)
		}
		added, err := q.CreateGroupMembers(ctx, db.CreateGroupMembersParams{ConversationID: conv.ID, MemberIds: ids})
		if err != nil {
			return fmt.Errorf("add group members: %w", err)
		}
		if len(added) != len(ids) {
			return fmt.Errorf("add group members: %d of %d rows inserted into a new conversation", len(added), len(ids))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "group created", "group_id", g.ID, "owner_id", me, "members", g.MemberCount)
	out := toGroup(g)
	s.publish(append([]int64{me}, ids...), groupCreated(out))
	return &v1.CreateGroupResponse{Group: out}, nil
}

// checkMemberIDs bounds a member_ids list before the per-item checks, so a
// huge list is refused without validating each item: by the room left in
// the group (most) and by GroupMaxInvitees, which bounds the contact locks
// one call holds (checkInvitees).
func (s *GroupServer) checkMemberIDs(ids []int64, most int) error {
	if len(ids) > most {
		return invalid("member_ids: must have at most %d items (the group limit is %d members)", max(most, 0), s.cfg.GroupMaxMembers)
	}
	if len(ids) > s.cfg.GroupMaxInvitees {
		return invalid("member_ids: must have at most %d items per call; add more with AddGroupMembers", s.cfg.GroupMaxInvitees)
	}
	return nil
}

// checkInvitees returns the ids the inviter may add to the conversation,
// skipping those already in it. An unknown id is not found; a member who is
// not the inviter's contact, or with a block between them either way, cannot
// be added (one message for both, so the answer does not reveal a block).
//
// It checks twice: first without locks, so made-up ids or strangers are
// refused before a single lock is taken (each id used to cost an advisory
// lock up front, and a dozen such calls filled PostgreSQL's lock table);
// then, holding the contact lock of each pair that passed (as ContactService
// takes it), again, so what it saw cannot change before the members are added.
func checkInvitees(ctx context.Context, q *db.Queries, inviter, conversationID int64, ids []int64) ([]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	arg := db.ListGroupInviteesParams{ConversationID: conversationID, InviterID: inviter, MemberIds: ids}
	rows, err := q.ListGroupInvitees(ctx, arg)
	if err != nil {
		return nil, fmt.Errorf("check invitees: %w", err)
	}
	if arg.MemberIds, err = invitable(rows); err != nil || len(arg.MemberIds) == 0 {
		return nil, err
	}
	if err := q.LockContactPairsOf(ctx, db.LockContactPairsOfParams{A: inviter, Others: arg.MemberIds}); err != nil {
		return nil, fmt.Errorf("lock contact pairs: %w", err)
	}
	if rows, err = q.ListGroupInvitees(ctx, arg); err != nil {
		return nil, fmt.Errorf("check invitees: %w", err)
	}
	return invitable(rows)
}

// invitable returns the ids of rows the inviter may add, or why one may not be.
func invitable(rows []db.ListGroupInviteesRow) ([]int64, error) {
	out := make([]int64, 0, len(rows))
	for _, r := range rows {
		switch {
		case r.AlreadyMember:
			continue
		case !r.MemberExists:
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("member_ids: member %d not found", r.MemberID))
		case !r.IsContact || r.Blocked:
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("member_ids: member %d is not a contact you can add", r.MemberID))
		}
		out = append(out, r.MemberID)
	}
	return out, nil
}

// countMembers moves the group's member_count by delta and refreshes t.g;
// errGroupFull when that would pass the limit.
func (t *groupTx) countMembers(ctx context.Context, delta int32) error {
	updated, err := t.q.UpdateGroupMemberCount(ctx, db.UpdateGroupMemberCountParams{ID: t.g.ID, Delta: delta})
	if errors.Is(err, store.ErrNotFound) {
		return errGroupFull
	}
	if err != nil {
		return fmt.Errorf("count group members: %w", err)
	}
	t.g = updated
	return nil
}

func (s *GroupServer) GetGroup(ctx context.Context, req *v1.GetGroupRequest) (*v1.GetGroupResponse, error) {
	p := groupIDParams{GroupID: req.GetGroupId()}
	if err := check(p); err != nil {
		return nil, err
	}
	g, role, err := s.viewGroup(ctx, p.GroupID)
	if err != nil {
		return nil, err
	}
	return &v1.GetGroupResponse{Group: toGroup(g), MyRole: v1.GroupRole(role)}, nil
}

type updateGroupParams struct {
	GroupID    int64   `name:"group_id" validate:"gt=0"`
	Name       *string `name:"name" validate:"omitnil,text,min=1,max=64"`
	Avatar     *string `name:"avatar" validate:"omitnil,omitempty,text,max=512,http_url"`
	Notice     *string `name:"notice" validate:"omitnil,text,max=1024"`
	JoinPolicy *int32  `name:"join_policy" validate:"omitnil,oneof=1 2"`
}

func (s *GroupServer) UpdateGroup(ctx context.Context, req *v1.UpdateGroupRequest) (*v1.UpdateGroupResponse, error) {
	p := updateGroupParams{GroupID: req.GetGroupId(), Avatar: req.Avatar, Notice: req.Notice}
	if req.Name != nil {
		name := strings.TrimSpace(req.GetName())
		p.Name = &name
	}
	var policy *int16
	if req.JoinPolicy != nil {
		jp := int32(req.GetJoinPolicy())
		p.JoinPolicy = &jp
		policy = new(int16(jp))
	}
	if err := check(p); err != nil {
		return nil, err
	}
	changes := p.Name != nil || p.Avatar != nil || p.Notice != nil || p.JoinPolicy != nil
	g, err := s.changeGroup(ctx, p.GroupID, store.RoleAdmin, func(t *groupTx) error {
		if !changes {
			return nil
		}
		g, err := t.q.UpdateGroup(ctx, db.UpdateGroupParams{ID: t.g.ID, Name: p.Name, Avatar: p.Avatar, Notice: p.Notice, JoinPolicy: policy})
		if err != nil {
			return fmt.Errorf("update group: %w", err)
		}
		t.g = g
		t.tell(groupUpdated(toGroup(g)))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &v1.UpdateGroupResponse{Group: toGroup(g)}, nil
}

func (s *GroupServer) ListMyGroups(ctx context.Context, req *v1.ListMyGroupsRequest) (*v1.ListMyGroupsResponse, error) {
	pg, err := parseIDPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	rows, err := s.q.ListGroupsByMember(ctx, db.ListGroupsByMemberParams{
		MemberID: callerFrom(ctx).MemberID, AfterConversationID: pg.after, MaxRows: pg.limit(),
	})
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	groups, next := pageOf(pg, rows, func(r db.ListGroupsByMemberRow) int64 { return r.Group.ConversationID },
		func(r db.ListGroupsByMemberRow) *v1.Group { return toGroup(r.Group) })
	return &v1.ListMyGroupsResponse{Groups: groups, NextPageToken: next}, nil
}

func (s *GroupServer) ListGroupMembers(ctx context.Context, req *v1.ListGroupMembersRequest) (*v1.ListGroupMembersResponse, error) {
	p := groupIDParams{GroupID: req.GetGroupId()}
	if err := check(p); err != nil {
		return nil, err
	}
	pg, err := parseIDPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	g, role, err := s.viewGroup(ctx, p.GroupID)
	if err != nil {
		return nil, err
	}
	if role == store.RoleNone {
		return nil, errPermission // an open group's members are for its members
	}
	rows, err := s.q.ListGroupMembersWithProfiles(ctx, db.ListGroupMembersWithProfilesParams{
		ConversationID: g.ConversationID, AfterMemberID: pg.after, MaxRows: pg.limit(),
	})
	if err != nil {
		return nil, fmt.Errorf("list group members: %w", err)
	}
	me := callerFrom(ctx).MemberID
	members, next := pageOf(pg, rows, func(r db.ListGroupMembersWithProfilesRow) int64 { return r.Member.ID },
		func(r db.ListGroupMembersWithProfilesRow) *v1.GroupMember {
			return toGroupMember(r.Member, r.Member.ID == me, r.Role, timestamppb.New(r.JoinedAt))
		})
	return &v1.ListGroupMembersResponse{Members: members, NextPageToken: next}, nil
}

type addGroupMembersParams struct {
	GroupID   int64   `name:"group_id" validate:"gt=0"`
	MemberIDs []int64 `name:"member_ids" validate:"required,unique,dive,gt=0"`
}

func (s *GroupServer) AddGroupMembers(ctx context.Context, req *v1.AddGroupMembersRequest) (*v1.AddGroupMembersResponse, error) {
	p := addGroupMembersParams{GroupID: req.GetGroupId(), MemberIDs: req.GetMemberIds()}
	if err := s.checkMemberIDs(p.MemberIDs, s.cfg.GroupMaxMembers); err != nil {
		return nil, err
	}
	if err := check(p); err != nil {
		return nil, err
	}
	var added []*v1.GroupMember
	g, err := s.changeGroup(ctx, p.GroupID, store.RoleAdmin, func(t *groupTx) error {
		ids, err := checkInvitees(ctx, t.q, t.me, t.g.ConversationID, p.MemberIDs)
		if err != nil || len(ids) == 0 {
			return err
		}
		rows, err := t.q.CreateGroupMembers(ctx, db.CreateGroupMembersParams{ConversationID: t.g.ConversationID, MemberIds: ids})
		if err != nil {
			return fmt.Errorf("add group members: %w", err)
		}
		if err := t.countMembers(ctx, int32(len(rows))); errors.Is(err, errGroupFull) {
			return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("the group is full: %d of %d members, cannot add %d", t.g.MemberCount, t.g.MaxMembers, len(rows)))
		} else if err != nil {
			return err
		}
		profiles, err := t.q.ListMembersByIDs(ctx, ids)
		if err != nil {
			return fmt.Errorf("read added members: %w", err)
		}
		joinedAt := make(map[int64]*timestamppb.Timestamp, len(rows))
		for _, r := range rows {
			joinedAt[r.MemberID] = timestamppb.New(r.JoinedAt)
		}
		// One event for everyone added (in id order, as the profiles come).
		addedIDs := make([]int64, 0, len(rows))
		for _, m := range profiles {
			if joinedAt[m.ID] != nil {
				added = append(added, toGroupMember(m, false, store.RoleMember, joinedAt[m.ID]))
				addedIDs = append(addedIDs, m.ID)
			}
		}
		t.tell(membersAdded(t.g.ID, addedIDs, t.me))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &v1.AddGroupMembersResponse{Group: toGroup(g), Added: added}, nil
}

func (s *GroupServer) RemoveGroupMember(ctx context.Context, req *v1.RemoveGroupMemberRequest) (*v1.RemoveGroupMemberResponse, error) {
	p := groupTargetParams{GroupID: req.GetGroupId(), MemberID: req.GetMemberId()}
	if err := check(p); err != nil {
		return nil, err
	}
	if p.MemberID == callerFrom(ctx).MemberID {
		return nil, invalid("member_id: is you; use LeaveGroup")
	}
	_, err := s.changeGroup(ctx, p.GroupID, store.RoleAdmin, func(t *groupTx) error {
		// Read before the delete: the removed member's devices get the event too.
		to, err := t.hearers(ctx)
		if err != nil {
			return err
		}
		_, err = t.q.DeleteGroupMember(ctx, db.DeleteGroupMemberParams{ConversationID: t.g.ConversationID, MemberID: p.MemberID, BelowRole: t.role})
		if errors.Is(err, store.ErrNotFound) {
			// Either not in the group, or ranked too high for the caller to remove.
			if !slices.Contains(to, p.MemberID) {
				return errTargetNotInGroup
			}
			return errPermission
		}
		if err != nil {
			return fmt.Errorf("remove group member: %w", err)
		}
		t.tell(memberRemoved(t.g.ID, p.MemberID, t.me))
		return t.countMembers(ctx, -1)
	})
	if err != nil {
		return nil, err
	}
	return &v1.RemoveGroupMemberResponse{}, nil
}

func (s *GroupServer) JoinGroup(ctx context.Context, req *v1.JoinGroupRequest) (*v1.JoinGroupResponse, error) {
	p := groupIDParams{GroupID: req.GetGroupId()}
	if err := check(p); err != nil {
		return nil, err
	}
	g, err := s.changeGroup(ctx, p.GroupID, anyone, func(t *groupTx) error {
		switch {
		case t.role != store.RoleNone:
			return errAlreadyGroupMember
		case t.g.JoinPolicy != store.PolicyOpen:
			return errPermission
		}
		err := t.q.AddConversationMember(ctx, db.AddConversationMemberParams{ConversationID: t.g.ConversationID, MemberID: t.me, Role: store.RoleMember})
		if err != nil {
			return fmt.Errorf("join group: %w", err)
		}
		t.tell(memberJoined(t.g.ID, t.me, t.me))
		return t.countMembers(ctx, 1)
	})
	if err != nil {
		return nil, err
	}
	return &v1.JoinGroupResponse{Group: toGroup(g)}, nil
}

func (s *GroupServer) LeaveGroup(ctx context.Context, req *v1.LeaveGroupRequest) (*v1.LeaveGroupResponse, error) {
	p := groupIDParams{GroupID: req.GetGroupId()}
	if err := check(p); err != nil {
		return nil, err
	}
	_, err := s.changeGroup(ctx, p.GroupID, store.RoleNone, func(t *groupTx) error {
		switch t.role {
		case store.RoleNone:
			return errNotFound
		case store.RoleOwner:
			return errOwnerMustTransfer
		}
		// Read before the delete: the member's other devices hear of it too.
		if _, err := t.hearers(ctx); err != nil {
			return err
		}
		_, err := t.q.DeleteGroupMember(ctx, db.DeleteGroupMemberParams{ConversationID: t.g.ConversationID, MemberID: t.me, BelowRole: store.RoleOwner})
		if err != nil {
			return fmt.Errorf("leave group: %w", err)
		}
		t.tell(memberLeft(t.g.ID, t.me))
		return t.countMembers(ctx, -1)
	})
	if err != nil {
		return nil, err
	}
	return &v1.LeaveGroupResponse{}, nil
}

func (s *GroupServer) TransferOwnership(ctx context.Context, req *v1.TransferOwnershipRequest) (*v1.TransferOwnershipResponse, error) {
	p := groupTargetParams{GroupID: req.GetGroupId(), MemberID: req.GetMemberId()}
	if err := check(p); err != nil {
		return nil, err
	}
	me := callerFrom(ctx).MemberID
	if p.MemberID == me {
		return nil, invalid("member_id: is you; name another member")
	}
	g, err := s.changeGroup(ctx, p.GroupID, store.RoleOwner, func(t *groupTx) error {
		_, err := t.q.UpdateGroupMemberRole(ctx, db.UpdateGroupMemberRoleParams{ConversationID: t.g.ConversationID, MemberID: p.MemberID, Role: store.RoleOwner})
		if errors.Is(err, store.ErrNotFound) {
			return errTargetNotInGroup
		}
		if err != nil {
			return fmt.Errorf("promote new owner: %w", err)
		}
		_, err = t.q.UpdateGroupMemberRole(ctx, db.UpdateGroupMemberRoleParams{ConversationID: t.g.ConversationID, MemberID: me, Role: store.RoleAdmin})
		if err != nil {
			return fmt.Errorf("demote old owner: %w", err)
		}
		// Conditional on the old owner: a second line of defence behind the lock.
		t.g, err = t.q.UpdateGroupOwner(ctx, db.UpdateGroupOwnerParams{ID: t.g.ID, OldOwnerID: me, NewOwnerID: p.MemberID})
		if errors.Is(err, store.ErrNotFound) {
			return errPermission
		}
		if err != nil {
			return fmt.Errorf("transfer ownership: %w", err)
		}
		t.tell(memberRoleChanged(t.g.ID, p.MemberID, me, store.RoleOwner), memberRoleChanged(t.g.ID, me, me, store.RoleAdmin))
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "group ownership transferred", "group_id", g.ID, "from", me, "to", p.MemberID)
	return &v1.TransferOwnershipResponse{Group: toGroup(g)}, nil
}

func (s *GroupServer) SetMemberRole(ctx context.Context, req *v1.SetMemberRoleRequest) (*v1.SetMemberRoleResponse, error) {
	p := groupTargetParams{GroupID: req.GetGroupId(), MemberID: req.GetMemberId()}
	if err := check(p); err != nil {
		return nil, err
	}
	newRole := int16(req.GetRole())
	if newRole != store.RoleAdmin && newRole != store.RoleMember {
		return nil, invalid("role: must be GROUP_ROLE_ADMIN or GROUP_ROLE_MEMBER")
	}
	_, err := s.changeGroup(ctx, p.GroupID, store.RoleOwner, func(t *groupTx) error {
		target, err := t.q.GetConversationMember(ctx, db.GetConversationMemberParams{ConversationID: t.g.ConversationID, MemberID: p.MemberID})
		if errors.Is(err, store.ErrNotFound) {
			return errTargetNotInGroup
		}
		if err != nil {
			return fmt.Errorf("get group member: %w", err)
		}
		switch target.Role {
		case store.RoleOwner:
			return errTargetIsOwner
		case newRole:
			return nil // already so: nothing changes, nobody is told
		}
		_, err = t.q.UpdateGroupMemberRole(ctx, db.UpdateGroupMemberRoleParams{ConversationID: t.g.ConversationID, MemberID: p.MemberID, Role: newRole})
		if err != nil {
			return fmt.Errorf("set member role: %w", err)
		}
		t.tell(memberRoleChanged(t.g.ID, p.MemberID, t.me, newRole))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &v1.SetMemberRoleResponse{}, nil
}

func (s *GroupServer) DissolveGroup(ctx context.Context, req *v1.DissolveGroupRequest) (*v1.DissolveGroupResponse, error) {
	p := groupIDParams{GroupID: req.GetGroupId()}
	if err := check(p); err != nil {
		return nil, err
	}
	var former int
	_, err := s.changeGroup(ctx, p.GroupID, store.RoleOwner, func(t *groupTx) error {
		// With no conversation_members rows left, chat refuses the group's
		// conversation to everyone; the messages stay, unreachable. Those
		// removed are the ones told.
		ids, err := t.q.DeleteGroupMembers(ctx, t.g.ConversationID)
		if err != nil {
			return fmt.Errorf("remove group members: %w", err)
		}
		t.to, t.read, former = ids, true, len(ids)
		if _, err = t.q.DissolveGroup(ctx, t.g.ID); err != nil {
			return fmt.Errorf("dissolve group: %w", err)
		}
		t.tell(groupDissolved(p.GroupID))
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "group dissolved", "group_id", p.GroupID, "owner_id", callerFrom(ctx).MemberID, "members", former)
	return &v1.DissolveGroupResponse{}, nil
}
