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
)

// GroupServer implements GroupService.
//
// A group's members are the conversation_members rows of its conversation, so
// ChatService authorizes group messages with the same rows. Every write to a
// group's membership or roles runs in one transaction that first locks the
// group row (LockGroup): writes to one group are serialized, and the role
// checks that follow the lock cannot go stale. The size limit is enforced by a
// conditional UPDATE of member_count (and the table's CHECK behind it).
//
// Visibility: a member sees its group; anyone sees an open group; an
// invite-only group is not found for non-members, like a dissolved one.
type GroupServer struct {
	*base
}

var _ karlmalonev1connect.GroupServiceHandler = (*GroupServer)(nil)

// Roles in a group conversation's conversation_members rows.
const (
	groupRoleMember = int16(v1.GroupRole_GROUP_ROLE_MEMBER)
	groupRoleAdmin  = int16(v1.GroupRole_GROUP_ROLE_ADMIN)
	groupRoleOwner  = int16(v1.GroupRole_GROUP_ROLE_OWNER)

	joinInviteOnly = int16(v1.JoinPolicy_JOIN_POLICY_INVITE_ONLY)
	joinOpen       = int16(v1.JoinPolicy_JOIN_POLICY_OPEN)
)

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

type createGroupParams struct {
	Name       string  `name:"name" validate:"required,max=64"`
	Avatar     string  `name:"avatar" validate:"omitempty,max=512,http_url"`
	Notice     string  `name:"notice" validate:"max=1024"`
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
		policy = joinInviteOnly
	}
	var g db.Group
	var ids []int64
	err := s.inTx(ctx, func(q *db.Queries) error {
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
		err = q.AddConversationMember(ctx, db.AddConversationMemberParams{ConversationID: conv.ID, MemberID: me, Role: groupRoleOwner})
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
	s.publish(append([]int64{me}, ids...), &v1.Event{Kind: &v1.Event_GroupCreated{GroupCreated: out}})
	return &v1.CreateGroupResponse{Group: out}, nil
}

// checkMemberIDs bounds a member_ids list before the per-item checks, so a
// huge list is refused without validating each item.
func (s *GroupServer) checkMemberIDs(ids []int64, most int) error {
	if len(ids) > most {
		return invalid("member_ids: must have at most %d items (the group limit is %d members)", max(most, 0), s.cfg.GroupMaxMembers)
	}
	return nil
}

// checkInvitees returns the ids the inviter may add to the conversation,
// skipping those already in it. An unknown id is not found; a member who is
// not the inviter's contact, or with a block between them either way, cannot
// be added (one message for both, so the answer does not reveal a block).
func checkInvitees(ctx context.Context, q *db.Queries, inviter, conversationID int64, ids []int64) ([]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	// Hold each pair's contact lock (as ContactService does) until commit, so
	// what the check below sees cannot change before the members are added.
	if err := q.LockContactPairsOf(ctx, db.LockContactPairsOfParams{A: inviter, Others: ids}); err != nil {
		return nil, fmt.Errorf("lock contact pairs: %w", err)
	}
	rows, err := q.ListGroupInvitees(ctx, db.ListGroupInviteesParams{ConversationID: conversationID, InviterID: inviter, MemberIds: ids})
	if err != nil {
		return nil, fmt.Errorf("check invitees: %w", err)
	}
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

// roleIn is the caller's role in g, 0 when not a member. A group the caller
// may not see (invite-only, not a member) is not found.
func roleIn(ctx context.Context, q *db.Queries, g db.Group, memberID int64) (int16, error) {
	m, err := q.GetConversationMember(ctx, db.GetConversationMemberParams{ConversationID: g.ConversationID, MemberID: memberID})
	switch {
	case isNoRows(err) && g.JoinPolicy == joinOpen:
		return 0, nil
	case isNoRows(err):
		return 0, errNotFound
	case err != nil:
		return 0, fmt.Errorf("get group member: %w", err)
	}
	return m.Role, nil
}

// lockGroup locks a live group for a change and returns it with the caller's
// role (0 for a non-member of an open group).
func lockGroup(ctx context.Context, q *db.Queries, groupID, me int64) (db.Group, int16, error) {
	g, err := q.LockGroup(ctx, groupID)
	if err != nil {
		return g, 0, fmt.Errorf("lock group: %w", err)
	}
	role, err := roleIn(ctx, q, g, me)
	return g, role, err
}

// groupRecipients is everyone an event about the group goes to, read inside
// the transaction so it matches what commits.
func groupRecipients(ctx context.Context, q *db.Queries, g db.Group) ([]int64, error) {
	ids, err := q.ListConversationMemberIDs(ctx, g.ConversationID)
	if err != nil {
		return nil, fmt.Errorf("list group members: %w", err)
	}
	return ids, nil
}

func (s *GroupServer) GetGroup(ctx context.Context, req *v1.GetGroupRequest) (*v1.GetGroupResponse, error) {
	p := groupIDParams{GroupID: req.GetGroupId()}
	if err := check(p); err != nil {
		return nil, err
	}
	g, err := s.q.GetGroupByID(ctx, p.GroupID)
	if err != nil {
		return nil, fmt.Errorf("get group: %w", err)
	}
	role, err := roleIn(ctx, s.q, g, callerFrom(ctx).MemberID)
	if err != nil {
		return nil, err
	}
	return &v1.GetGroupResponse{Group: toGroup(g), MyRole: v1.GroupRole(role)}, nil
}

type updateGroupParams struct {
	GroupID    int64   `name:"group_id" validate:"gt=0"`
	Name       *string `name:"name" validate:"omitnil,min=1,max=64"`
	Avatar     *string `name:"avatar" validate:"omitnil,omitempty,max=512,http_url"`
	Notice     *string `name:"notice" validate:"omitnil,max=1024"`
	JoinPolicy *int32  `name:"join_policy" validate:"omitnil,oneof=1 2"`
}

func (s *GroupServer) UpdateGroup(ctx context.Context, req *v1.UpdateGroupRequest) (*v1.UpdateGroupResponse, error) {
	me := callerFrom(ctx).MemberID
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
	var g db.Group
	var to []int64
	err := s.inTx(ctx, func(q *db.Queries) error {
		var role int16
		var err error
		if g, role, err = lockGroup(ctx, q, p.GroupID, me); err != nil {
			return err
		}
		if role < groupRoleAdmin {
			return errPermission
		}
		if !changes {
			return nil
		}
		g, err = q.UpdateGroup(ctx, db.UpdateGroupParams{ID: g.ID, Name: p.Name, Avatar: p.Avatar, Notice: p.Notice, JoinPolicy: policy})
		if err != nil {
			return fmt.Errorf("update group: %w", err)
		}
		to, err = groupRecipients(ctx, q, g)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := toGroup(g)
	s.publish(to, &v1.Event{Kind: &v1.Event_GroupUpdated{GroupUpdated: out}})
	return &v1.UpdateGroupResponse{Group: out}, nil
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
	rows, next := trimPage(rows, pg.size, func(r db.ListGroupsByMemberRow) []int64 { return []int64{r.Group.ConversationID} })
	res := &v1.ListMyGroupsResponse{NextPageToken: next}
	for _, r := range rows {
		res.Groups = append(res.Groups, toGroup(r.Group))
	}
	return res, nil
}

func (s *GroupServer) ListGroupMembers(ctx context.Context, req *v1.ListGroupMembersRequest) (*v1.ListGroupMembersResponse, error) {
	me := callerFrom(ctx).MemberID
	p := groupIDParams{GroupID: req.GetGroupId()}
	if err := check(p); err != nil {
		return nil, err
	}
	pg, err := parseIDPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	g, err := s.q.GetGroupByID(ctx, p.GroupID)
	if err != nil {
		return nil, fmt.Errorf("get group: %w", err)
	}
	role, err := roleIn(ctx, s.q, g, me)
	if err != nil {
		return nil, err
	}
	if role == 0 {
		return nil, errPermission // an open group's members are for its members
	}
	rows, err := s.q.ListGroupMembersWithProfiles(ctx, db.ListGroupMembersWithProfilesParams{
		ConversationID: g.ConversationID, AfterMemberID: pg.after, MaxRows: pg.limit(),
	})
	if err != nil {
		return nil, fmt.Errorf("list group members: %w", err)
	}
	rows, next := trimPage(rows, pg.size, func(r db.ListGroupMembersWithProfilesRow) []int64 { return []int64{r.Member.ID} })
	res := &v1.ListGroupMembersResponse{NextPageToken: next}
	for _, r := range rows {
		res.Members = append(res.Members, &v1.GroupMember{
			Member: toMember(r.Member, r.Member.ID == me), Role: v1.GroupRole(r.Role), JoinedAt: timestamppb.New(r.JoinedAt),
		})
	}
	return res, nil
}

type addGroupMembersParams struct {
	GroupID   int64   `name:"group_id" validate:"gt=0"`
	MemberIDs []int64 `name:"member_ids" validate:"required,unique,dive,gt=0"`
}

func (s *GroupServer) AddGroupMembers(ctx context.Context, req *v1.AddGroupMembersRequest) (*v1.AddGroupMembersResponse, error) {
	me := callerFrom(ctx).MemberID
	p := addGroupMembersParams{GroupID: req.GetGroupId(), MemberIDs: req.GetMemberIds()}
	if err := s.checkMemberIDs(p.MemberIDs, s.cfg.GroupMaxMembers); err != nil {
		return nil, err
	}
	if err := check(p); err != nil {
		return nil, err
	}
	var g db.Group
	var added []db.ConversationMember
	var profiles []db.Member
	var to []int64
	err := s.inTx(ctx, func(q *db.Queries) error {
		var role int16
		var err error
		if g, role, err = lockGroup(ctx, q, p.GroupID, me); err != nil {
			return err
		}
		if role < groupRoleAdmin {
			return errPermission
		}
		ids, err := checkInvitees(ctx, q, me, g.ConversationID, p.MemberIDs)
		if err != nil || len(ids) == 0 {
			return err
		}
		if added, err = q.CreateGroupMembers(ctx, db.CreateGroupMembersParams{ConversationID: g.ConversationID, MemberIds: ids}); err != nil {
			return fmt.Errorf("add group members: %w", err)
		}
		if err := s.countMembers(ctx, q, &g, int32(len(added))); errors.Is(err, errGroupFull) {
			return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("the group is full: %d of %d members, cannot add %d", g.MemberCount, g.MaxMembers, len(added)))
		} else if err != nil {
			return err
		}
		if profiles, err = q.ListMembersByIDs(ctx, ids); err != nil {
			return fmt.Errorf("read added members: %w", err)
		}
		to, err = groupRecipients(ctx, q, g)
		return err
	})
	if err != nil {
		return nil, err
	}
	res := &v1.AddGroupMembersResponse{Group: toGroup(g)}
	joinedAt := make(map[int64]*timestamppb.Timestamp, len(added))
	for _, a := range added {
		joinedAt[a.MemberID] = timestamppb.New(a.JoinedAt)
	}
	for _, m := range profiles {
		if joinedAt[m.ID] == nil {
			continue
		}
		res.Added = append(res.Added, &v1.GroupMember{Member: toMember(m, false), Role: v1.GroupRole_GROUP_ROLE_MEMBER, JoinedAt: joinedAt[m.ID]})
		s.publish(to, memberEvent(g.ID, m.ID, me, groupRoleMember, func(c *v1.GroupMemberChange) *v1.Event {
			return &v1.Event{Kind: &v1.Event_MemberJoined{MemberJoined: c}}
		}))
	}
	return res, nil
}

func (s *GroupServer) RemoveGroupMember(ctx context.Context, req *v1.RemoveGroupMemberRequest) (*v1.RemoveGroupMemberResponse, error) {
	me := callerFrom(ctx).MemberID
	p := groupTargetParams{GroupID: req.GetGroupId(), MemberID: req.GetMemberId()}
	if err := check(p); err != nil {
		return nil, err
	}
	if p.MemberID == me {
		return nil, invalid("member_id: is you; use LeaveGroup")
	}
	var g db.Group
	var to []int64
	err := s.inTx(ctx, func(q *db.Queries) error {
		var role int16
		var err error
		if g, role, err = lockGroup(ctx, q, p.GroupID, me); err != nil {
			return err
		}
		if role < groupRoleAdmin {
			return errPermission
		}
		// Read before the delete: the removed member's devices get the event too.
		if to, err = groupRecipients(ctx, q, g); err != nil {
			return err
		}
		_, err = q.DeleteGroupMember(ctx, db.DeleteGroupMemberParams{ConversationID: g.ConversationID, MemberID: p.MemberID, BelowRole: role})
		if isNoRows(err) {
			// Either not in the group, or ranked too high for the caller to remove.
			if !slices.Contains(to, p.MemberID) {
				return errTargetNotInGroup
			}
			return errPermission
		}
		if err != nil {
			return fmt.Errorf("remove group member: %w", err)
		}
		return s.countMembers(ctx, q, &g, -1)
	})
	if err != nil {
		return nil, err
	}
	s.publish(to, memberEvent(g.ID, p.MemberID, me, 0, func(c *v1.GroupMemberChange) *v1.Event {
		return &v1.Event{Kind: &v1.Event_MemberRemoved{MemberRemoved: c}}
	}))
	return &v1.RemoveGroupMemberResponse{}, nil
}

// countMembers moves g's member_count by delta and refreshes g.
func (s *GroupServer) countMembers(ctx context.Context, q *db.Queries, g *db.Group, delta int32) error {
	updated, err := q.UpdateGroupMemberCount(ctx, db.UpdateGroupMemberCountParams{ID: g.ID, Delta: delta})
	if isNoRows(err) {
		return errGroupFull
	}
	if err != nil {
		return fmt.Errorf("count group members: %w", err)
	}
	*g = updated
	return nil
}

func (s *GroupServer) JoinGroup(ctx context.Context, req *v1.JoinGroupRequest) (*v1.JoinGroupResponse, error) {
	me := callerFrom(ctx).MemberID
	p := groupIDParams{GroupID: req.GetGroupId()}
	if err := check(p); err != nil {
		return nil, err
	}
	var g db.Group
	var to []int64
	err := s.inTx(ctx, func(q *db.Queries) error {
		var err error
		if g, err = q.LockGroup(ctx, p.GroupID); err != nil {
			return fmt.Errorf("lock group: %w", err)
		}
		_, err = q.GetConversationMember(ctx, db.GetConversationMemberParams{ConversationID: g.ConversationID, MemberID: me})
		switch {
		case err == nil:
			return errAlreadyGroupMember
		case !isNoRows(err):
			return fmt.Errorf("get group member: %w", err)
		case g.JoinPolicy != joinOpen:
			return errPermission
		}
		err = q.AddConversationMember(ctx, db.AddConversationMemberParams{ConversationID: g.ConversationID, MemberID: me, Role: groupRoleMember})
		if err != nil {
			return fmt.Errorf("join group: %w", err)
		}
		if err := s.countMembers(ctx, q, &g, 1); err != nil {
			return err
		}
		to, err = groupRecipients(ctx, q, g)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.publish(to, memberEvent(g.ID, me, me, groupRoleMember, func(c *v1.GroupMemberChange) *v1.Event {
		return &v1.Event{Kind: &v1.Event_MemberJoined{MemberJoined: c}}
	}))
	return &v1.JoinGroupResponse{Group: toGroup(g)}, nil
}

func (s *GroupServer) LeaveGroup(ctx context.Context, req *v1.LeaveGroupRequest) (*v1.LeaveGroupResponse, error) {
	me := callerFrom(ctx).MemberID
	p := groupIDParams{GroupID: req.GetGroupId()}
	if err := check(p); err != nil {
		return nil, err
	}
	var g db.Group
	var to []int64
	err := s.inTx(ctx, func(q *db.Queries) error {
		var role int16
		var err error
		if g, role, err = lockGroup(ctx, q, p.GroupID, me); err != nil {
			return err
		}
		switch role {
		case 0:
			return errNotFound
		case groupRoleOwner:
			return errOwnerMustTransfer
		}
		if to, err = groupRecipients(ctx, q, g); err != nil {
			return err
		}
		_, err = q.DeleteGroupMember(ctx, db.DeleteGroupMemberParams{ConversationID: g.ConversationID, MemberID: me, BelowRole: groupRoleOwner})
		if err != nil {
			return fmt.Errorf("leave group: %w", err)
		}
		return s.countMembers(ctx, q, &g, -1)
	})
	if err != nil {
		return nil, err
	}
	s.publish(to, memberEvent(g.ID, me, me, 0, func(c *v1.GroupMemberChange) *v1.Event {
		return &v1.Event{Kind: &v1.Event_MemberLeft{MemberLeft: c}}
	}))
	return &v1.LeaveGroupResponse{}, nil
}

func (s *GroupServer) TransferOwnership(ctx context.Context, req *v1.TransferOwnershipRequest) (*v1.TransferOwnershipResponse, error) {
	me := callerFrom(ctx).MemberID
	p := groupTargetParams{GroupID: req.GetGroupId(), MemberID: req.GetMemberId()}
	if err := check(p); err != nil {
		return nil, err
	}
	if p.MemberID == me {
		return nil, invalid("member_id: is you; name another member")
	}
	var g db.Group
	var to []int64
	err := s.inTx(ctx, func(q *db.Queries) error {
		var role int16
		var err error
		if g, role, err = lockGroup(ctx, q, p.GroupID, me); err != nil {
			return err
		}
		if role != groupRoleOwner {
			return errPermission
		}
		_, err = q.UpdateGroupMemberRole(ctx, db.UpdateGroupMemberRoleParams{ConversationID: g.ConversationID, MemberID: p.MemberID, Role: groupRoleOwner})
		if isNoRows(err) {
			return errTargetNotInGroup
		}
		if err != nil {
			return fmt.Errorf("promote new owner: %w", err)
		}
		_, err = q.UpdateGroupMemberRole(ctx, db.UpdateGroupMemberRoleParams{ConversationID: g.ConversationID, MemberID: me, Role: groupRoleAdmin})
		if err != nil {
			return fmt.Errorf("demote old owner: %w", err)
		}
		// Conditional on the old owner: a second line of defence behind the lock.
		g, err = q.UpdateGroupOwner(ctx, db.UpdateGroupOwnerParams{ID: g.ID, OldOwnerID: me, NewOwnerID: p.MemberID})
		if isNoRows(err) {
			return errPermission
		}
		if err != nil {
			return fmt.Errorf("transfer ownership: %w", err)
		}
		to, err = groupRecipients(ctx, q, g)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "group ownership transferred", "group_id", g.ID, "from", me, "to", p.MemberID)
	roleChanged := func(c *v1.GroupMemberChange) *v1.Event {
		return &v1.Event{Kind: &v1.Event_MemberRoleChanged{MemberRoleChanged: c}}
	}
	s.publish(to, memberEvent(g.ID, p.MemberID, me, groupRoleOwner, roleChanged))
	s.publish(to, memberEvent(g.ID, me, me, groupRoleAdmin, roleChanged))
	return &v1.TransferOwnershipResponse{Group: toGroup(g)}, nil
}

func (s *GroupServer) SetMemberRole(ctx context.Context, req *v1.SetMemberRoleRequest) (*v1.SetMemberRoleResponse, error) {
	me := callerFrom(ctx).MemberID
	p := groupTargetParams{GroupID: req.GetGroupId(), MemberID: req.GetMemberId()}
	if err := check(p); err != nil {
		return nil, err
	}
	newRole := int16(req.GetRole())
	if newRole != groupRoleAdmin && newRole != groupRoleMember {
		return nil, invalid("role: must be GROUP_ROLE_ADMIN or GROUP_ROLE_MEMBER")
	}
	var g db.Group
	var to []int64
	err := s.inTx(ctx, func(q *db.Queries) error {
		var role int16
		var err error
		if g, role, err = lockGroup(ctx, q, p.GroupID, me); err != nil {
			return err
		}
		if role != groupRoleOwner {
			return errPermission
		}
		target, err := q.GetConversationMember(ctx, db.GetConversationMemberParams{ConversationID: g.ConversationID, MemberID: p.MemberID})
		if isNoRows(err) {
			return errTargetNotInGroup
		}
		if err != nil {
			return fmt.Errorf("get group member: %w", err)
		}
		switch target.Role {
		case groupRoleOwner:
			return errTargetIsOwner
		case newRole:
			return nil // already so: nothing changes, nobody is told
		}
		_, err = q.UpdateGroupMemberRole(ctx, db.UpdateGroupMemberRoleParams{ConversationID: g.ConversationID, MemberID: p.MemberID, Role: newRole})
		if err != nil {
			return fmt.Errorf("set member role: %w", err)
		}
		to, err = groupRecipients(ctx, q, g)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.publish(to, memberEvent(g.ID, p.MemberID, me, newRole, func(c *v1.GroupMemberChange) *v1.Event {
		return &v1.Event{Kind: &v1.Event_MemberRoleChanged{MemberRoleChanged: c}}
	}))
	return &v1.SetMemberRoleResponse{}, nil
}

func (s *GroupServer) DissolveGroup(ctx context.Context, req *v1.DissolveGroupRequest) (*v1.DissolveGroupResponse, error) {
	me := callerFrom(ctx).MemberID
	p := groupIDParams{GroupID: req.GetGroupId()}
	if err := check(p); err != nil {
		return nil, err
	}
	var former []int64
	err := s.inTx(ctx, func(q *db.Queries) error {
		g, role, err := lockGroup(ctx, q, p.GroupID, me)
		if err != nil {
			return err
		}
		if role != groupRoleOwner {
			return errPermission
		}
		// With no conversation_members rows left, chat refuses the group's
		// conversation to everyone; the messages stay, unreachable.
		if former, err = q.DeleteGroupMembers(ctx, g.ConversationID); err != nil {
			return fmt.Errorf("remove group members: %w", err)
		}
		if _, err = q.DissolveGroup(ctx, g.ID); err != nil {
			return fmt.Errorf("dissolve group: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "group dissolved", "group_id", p.GroupID, "owner_id", me, "members", len(former))
	s.publish(former, &v1.Event{Kind: &v1.Event_GroupDissolved{GroupDissolved: &v1.GroupDissolved{GroupId: p.GroupID}}})
	return &v1.DissolveGroupResponse{}, nil
}

// memberEvent builds a GroupMemberChange event; kind picks the oneof case.
func memberEvent(groupID, memberID, actorID int64, role int16, kind func(*v1.GroupMemberChange) *v1.Event) *v1.Event {
	return kind(&v1.GroupMemberChange{GroupId: groupID, MemberId: memberID, ActorId: actorID, Role: v1.GroupRole(role)})
}

// toGroup maps a group row to the API.
func toGroup(g db.Group) *v1.Group {
	return &v1.Group{
		Id: g.ID, Name: g.Name, Avatar: g.Avatar, Notice: g.Notice, OwnerId: g.OwnerID,
		MemberCount: g.MemberCount, ConversationId: g.ConversationID, JoinPolicy: v1.JoinPolicy(g.JoinPolicy),
		CreatedAt: timestamppb.New(g.CreatedAt), MaxMembers: g.MaxMembers,
	}
}
