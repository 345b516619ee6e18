package server

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"connectrpc.com/connect"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/store"
)

type deleteAccountParams struct {
	Password string `name:"password" validate:"required,max=128"`
}

// groupLeft is what the other members of one group hear when a member
// deletes its account.
type groupLeft struct {
	to     []int64
	events []*v1.Event
}

// DeleteAccount deletes the caller's account for good, in one transaction:
//
//   - each group: an owner passes it to the oldest admin, else the oldest
//     member (role_changed), or dissolves it when alone; then the member
//     leaves (member_left);
//   - contacts (both sides), friend requests and blocks, either direction,
//     are removed; the direct conversations stay for the other side;
//   - every session is deleted: tokens fail at once and sockets close
//     (session_revoked), as with RevokeSession;
//   - the member row stays, as a tombstone: profile cleared, nickname
//     "Deleted member", deleted_at set, phone freed (Register may reuse it).
//     Messages keep their sender_id and are shown to the others as from a
//     deleted member.
//
// Contacts and group co-members get member_deleted. The order of locks —
// the member row, its groups (in id order), then its contact pairs — is the
// one GroupService takes (a group, then pairs), so they cannot deadlock.
func (s *MemberServer) DeleteAccount(ctx context.Context, req *v1.DeleteAccountRequest) (*v1.DeleteAccountResponse, error) {
	p := deleteAccountParams{Password: req.GetPassword()}
	if err := check(p); err != nil {
		return nil, err
	}
	c := callerFrom(ctx)
	m, err := s.q.GetMemberByID(ctx, c.MemberID)
	if err != nil {
		return nil, err
	}
	ok, err := s.hasher.Verify(ctx, p.Password, m.PasswordHash)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("password: is wrong"))
	}
	var (
		groups   []groupLeft
		told     []int64 // contacts and co-members, for member_deleted
		sessions []int64
	)
	err = s.store.InTx(ctx, func(q *db.Queries) error {
		groups, told, sessions = nil, nil, nil
		if _, err := q.LockMemberForDelete(ctx, c.MemberID); err != nil {
			return fmt.Errorf("lock member: %w", err)
		}
		rows, err := q.ListGroupsOfMemberForDelete(ctx, c.MemberID)
		if err != nil {
			return fmt.Errorf("list groups: %w", err)
		}
		for _, r := range rows {
			gl, err := leaveForGood(ctx, q, r.Group, r.Role, c.MemberID)
			if err != nil {
				return err
			}
			groups = append(groups, gl)
			told = append(told, gl.to...)
		}
		contacts, err := q.ListContactIDsForDelete(ctx, c.MemberID)
		if err != nil {
			return fmt.Errorf("list contacts: %w", err)
		}
		if err := q.LockContactPairsOf(ctx, db.LockContactPairsOfParams{A: c.MemberID, Others: contacts}); err != nil {
			return fmt.Errorf("lock contact pairs: %w", err)
		}
		told = append(told, contacts...)
		for _, del := range []func(context.Context, int64) error{
			q.DeleteContactsOfMember, q.DeleteFriendRequestsOfMember, q.DeleteBlocksOfMember, q.DeleteConversationMembershipsOfMember,
		} {
			if err := del(ctx, c.MemberID); err != nil {
				return fmt.Errorf("delete account: %w", err)
			}
		}
		if sessions, err = q.DeleteSessionsOfMember(ctx, c.MemberID); err != nil {
			return fmt.Errorf("delete sessions: %w", err)
		}
		if _, err := q.TombstoneMember(ctx, c.MemberID); err != nil {
			return fmt.Errorf("tombstone member: %w", err)
		}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		// A concurrent DeleteAccount got there first: the account is gone.
		return nil, errBadToken
	}
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		for _, ev := range g.events {
			s.publish(g.to, ev)
		}
	}
	slices.Sort(told)
	s.publish(slices.Compact(told), memberDeleted(c.MemberID))
	for _, id := range sessions {
		s.sessionRevoked(c.MemberID, id)
	}
	s.log.InfoContext(ctx, "account deleted", "member_id", c.MemberID, "groups", len(groups), "sessions_revoked", len(sessions))
	return &v1.DeleteAccountResponse{}, nil
}

// leaveForGood takes a departing member out of a group it belongs to, whose
// row the caller locked: an owner first passes the group on to its successor
// (GetGroupSuccessor) or, alone, dissolves it. It returns the remaining
// members and what they hear.
func leaveForGood(ctx context.Context, q *db.Queries, g db.Group, role int16, me int64) (groupLeft, error) {
	var out groupLeft
	if role == store.RoleOwner {
		next, err := q.GetGroupSuccessor(ctx, db.GetGroupSuccessorParams{ConversationID: g.ConversationID, OwnerID: me})
		if errors.Is(err, store.ErrNotFound) {
			// Alone: the group ends with its last member.
			if _, err := q.DeleteGroupMembers(ctx, g.ConversationID); err != nil {
				return out, fmt.Errorf("remove group members: %w", err)
			}
			if _, err := q.DissolveGroup(ctx, g.ID); err != nil {
				return out, fmt.Errorf("dissolve group: %w", err)
			}
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("get group successor: %w", err)
		}
		if _, err := q.UpdateGroupMemberRole(ctx, db.UpdateGroupMemberRoleParams{ConversationID: g.ConversationID, MemberID: next, Role: store.RoleOwner}); err != nil {
			return out, fmt.Errorf("promote new owner: %w", err)
		}
		if _, err := q.UpdateGroupOwner(ctx, db.UpdateGroupOwnerParams{ID: g.ID, OldOwnerID: me, NewOwnerID: next}); err != nil {
			return out, fmt.Errorf("pass ownership: %w", err)
		}
		out.events = append(out.events, memberRoleChanged(g.ID, next, me, store.RoleOwner))
	}
	if _, err := q.DeleteGroupMember(ctx, db.DeleteGroupMemberParams{ConversationID: g.ConversationID, MemberID: me, BelowRole: store.RoleOwner + 1}); err != nil {
		return out, fmt.Errorf("leave group: %w", err)
	}
	if _, err := q.UpdateGroupMemberCount(ctx, db.UpdateGroupMemberCountParams{ID: g.ID, Delta: -1}); err != nil {
		return out, fmt.Errorf("count group members: %w", err)
	}
	ids, err := q.ListConversationMemberIDs(ctx, g.ConversationID)
	if err != nil {
		return out, fmt.Errorf("list group members: %w", err)
	}
	out.to = ids
	out.events = append(out.events, memberLeft(g.ID, me))
	return out, nil
}
