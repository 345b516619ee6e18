package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/store"
)

// ContactServer implements ContactService.
//
// Every change to a pair of members that can create a request, a contact or a
// block (request, answer, block) runs in one transaction that first takes the
// pair's lock (LockContactPair), so the invariants hold under any
// interleaving: a pending request exists only between members who are neither
// contacts nor blocked, and at most one pending request exists per pair (a
// request meeting one the other way accepts it instead). RemoveContact takes
// no lock: it only deletes, both sides in one statement, which breaks none of
// these; a removal racing an accept finds the contact or does not, and either
// outcome is one the pair could have seen in some order.
type ContactServer struct {
	*base
}

var _ karlmalonev1connect.ContactServiceHandler = (*ContactServer)(nil)

// errRequestRefused answers a request to a member who blocked the caller.
// PermissionDenied is the honest "you may not" without naming the cause:
// NotFound would contradict GetMember (profiles are public), and AlreadyExists
// or FailedPrecondition would hint at a state the caller cannot see. The
// caller learns only that this member does not take their requests.
var errRequestRefused = connect.NewError(connect.CodePermissionDenied, errors.New("member_id: this member does not accept friend requests from you"))

type contactMemberParams struct {
	MemberID int64 `name:"member_id" validate:"gt=0"`
}

type sendFriendRequestParams struct {
	MemberID int64  `name:"member_id" validate:"gt=0"`
	Note     string `name:"note" validate:"text,max=256"`
}

func (s *ContactServer) SendFriendRequest(ctx context.Context, req *v1.SendFriendRequestRequest) (*v1.SendFriendRequestResponse, error) {
	me := callerFrom(ctx).MemberID
	p := sendFriendRequestParams{MemberID: req.GetMemberId(), Note: strings.TrimSpace(req.GetNote())}
	if err := check(p); err != nil {
		return nil, err
	}
	if p.MemberID == me {
		return nil, invalid("member_id: cannot send a friend request to yourself")
	}
	var (
		fr       db.FriendRequest
		peer     db.Member
		accepted bool // a pending request from the peer was accepted instead
	)
	err := s.store.InTx(ctx, func(q *db.Queries) error {
		if err := q.LockContactPair(ctx, db.LockContactPairParams{A: me, B: p.MemberID}); err != nil {
			return fmt.Errorf("lock pair: %w", err)
		}
		var err error
		if peer, err = q.GetMemberByID(ctx, p.MemberID); err != nil {
			return fmt.Errorf("get addressee: %w", err)
		}
		if peer.DeletedAt != nil {
			return errNotFound // a deleted account (DeleteAccount) takes no requests
		}
		blocks, err := q.GetBlocksBetween(ctx, db.GetBlocksBetweenParams{Me: me, Peer: p.MemberID})
		if err != nil {
			return fmt.Errorf("get blocks: %w", err)
		}
		switch {
		case blocks.BlockedByPeer:
			return errRequestRefused
		case blocks.BlockedByMe:
			return connect.NewError(connect.CodeFailedPrecondition, errors.New("member_id: you blocked this member; unblock them first"))
		}
		_, err = q.GetContact(ctx, db.GetContactParams{OwnerID: me, MemberID: p.MemberID})
		if err == nil {
			return connect.NewError(connect.CodeAlreadyExists, errors.New("member_id: already a contact"))
		}
		if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("get contact: %w", err)
		}
		// They already asked us: accept that request rather than open a
		// second one, so the pair becomes contacts exactly once.
		rev, err := q.GetPendingFriendRequest(ctx, db.GetPendingFriendRequestParams{FromMemberID: p.MemberID, ToMemberID: me})
		if err == nil {
			fr, _, err = acceptRequest(ctx, q, rev.ID, me)
			accepted = true
			return err
		}
		if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("get reverse request: %w", err)
		}
		fr, err = q.CreateFriendRequest(ctx, db.CreateFriendRequestParams{FromMemberID: me, ToMemberID: p.MemberID, Note: p.Note})
		if errors.Is(err, store.ErrRequestPending) {
			return connect.NewError(connect.CodeAlreadyExists, errors.New("member_id: a request to this member is already pending"))
		}
		if err != nil {
			return fmt.Errorf("create friend request: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if accepted {
		s.answered(ctx, fr)
	} else {
		s.received(ctx, fr)
	}
	return &v1.SendFriendRequestResponse{Request: toFriendRequest(fr, peer)}, nil
}

// received tells the addressee about a new request, with the sender's profile.
func (s *ContactServer) received(ctx context.Context, fr db.FriendRequest) {
	from, err := s.q.GetMemberByID(ctx, fr.FromMemberID)
	if err != nil {
		s.log.WarnContext(ctx, "friend request event: get sender", "request_id", fr.ID, "err", err)
		return
	}
	s.publish([]int64{fr.ToMemberID}, friendRequestReceived(toFriendRequest(fr, from)))
}

// answered tells the requester their request was accepted or declined, with
// the addressee's profile.
func (s *ContactServer) answered(ctx context.Context, fr db.FriendRequest) {
	to, err := s.q.GetMemberByID(ctx, fr.ToMemberID)
	if err != nil {
		s.log.WarnContext(ctx, "friend request event: get addressee", "request_id", fr.ID, "err", err)
		return
	}
	s.publish([]int64{fr.FromMemberID}, friendRequestAnswered(toFriendRequest(fr, to)))
}

// acceptRequest answers a pending request addressed to me with "accepted" and
// makes the pair contacts: both contact rows, the pair's conversation and both
// conversation members. The caller holds the pair's lock in q's transaction.
// It returns the request and my side of the contact.
func acceptRequest(ctx context.Context, q *db.Queries, requestID, me int64) (db.FriendRequest, db.Contact, error) {
	fr, err := q.UpdateFriendRequestStatus(ctx, db.UpdateFriendRequestStatusParams{
		Status: store.RequestAccepted, ID: requestID, ToMemberID: me,
	})
	if errors.Is(err, store.ErrNotFound) {
		return fr, db.Contact{}, errAlreadyAnswered
	}
	if err != nil {
		return fr, db.Contact{}, fmt.Errorf("accept request: %w", err)
	}
	// Any other pending request between the two is settled by this one.
	if _, err := q.ResolvePendingFriendRequestsBetween(ctx, db.ResolvePendingFriendRequestsBetweenParams{
		Status: store.RequestAccepted, A: fr.FromMemberID, B: fr.ToMemberID,
	}); err != nil {
		return fr, db.Contact{}, fmt.Errorf("resolve other requests: %w", err)
	}
	conv, err := q.UpsertDirectConversation(ctx, db.UpsertDirectConversationParams{A: fr.FromMemberID, B: fr.ToMemberID})
	if err != nil {
		return fr, db.Contact{}, fmt.Errorf("open conversation: %w", err)
	}
	for _, id := range []int64{fr.FromMemberID, fr.ToMemberID} {
		if err := q.AddConversationMember(ctx, db.AddConversationMemberParams{
			ConversationID: conv.ID, MemberID: id, Role: store.RoleNone,
		}); err != nil {
			return fr, db.Contact{}, fmt.Errorf("add conversation member: %w", err)
		}
	}
	rows, err := q.CreateContactPair(ctx, db.CreateContactPairParams{A: me, B: fr.FromMemberID, ConversationID: conv.ID})
	if err != nil {
		return fr, db.Contact{}, fmt.Errorf("create contacts: %w", err)
	}
	for _, c := range rows {
		if c.OwnerID == me {
			return fr, c, nil
		}
	}
	return fr, db.Contact{}, errors.New("create contacts: own row missing")
}

var errAlreadyAnswered = connect.NewError(connect.CodeFailedPrecondition, errors.New("request_id: the request was already answered"))

func (s *ContactServer) ListFriendRequests(ctx context.Context, req *v1.ListFriendRequestsRequest) (*v1.ListFriendRequestsResponse, error) {
	me := callerFrom(ctx).MemberID
	dir := req.GetDirection()
	if dir != v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_INCOMING && dir != v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_OUTGOING {
		return nil, invalid("direction: must be FRIEND_REQUEST_DIRECTION_INCOMING or FRIEND_REQUEST_DIRECTION_OUTGOING")
	}
	pg, err := parseIDPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	// Newest first: the key runs downwards, so pg.after is an upper bound.
	// Both directions read as (request, other side's profile).
	type row struct {
		fr    db.FriendRequest
		other db.Member
	}
	var rows []row
	if dir == v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_INCOMING {
		in, err := s.q.ListIncomingFriendRequests(ctx, db.ListIncomingFriendRequestsParams{MemberID: me, BeforeID: pg.after, MaxRows: pg.limit()})
		if err != nil {
			return nil, fmt.Errorf("list incoming requests: %w", err)
		}
		for _, r := range in {
			rows = append(rows, row{r.FriendRequest, r.Member})
		}
	} else {
		out, err := s.q.ListOutgoingFriendRequests(ctx, db.ListOutgoingFriendRequestsParams{MemberID: me, BeforeID: pg.after, MaxRows: pg.limit()})
		if err != nil {
			return nil, fmt.Errorf("list outgoing requests: %w", err)
		}
		for _, r := range out {
			rows = append(rows, row{r.FriendRequest, r.Member})
		}
	}
	requests, next := pageOf(pg, rows, func(r row) int64 { return r.fr.ID }, func(r row) *v1.FriendRequest { return toFriendRequest(r.fr, r.other) })
	return &v1.ListFriendRequestsResponse{Requests: requests, NextPageToken: next}, nil
}

type respondParams struct {
	RequestID int64 `name:"request_id" validate:"gt=0"`
}

func (s *ContactServer) RespondFriendRequest(ctx context.Context, req *v1.RespondFriendRequestRequest) (*v1.RespondFriendRequestResponse, error) {
	me := callerFrom(ctx).MemberID
	p := respondParams{RequestID: req.GetRequestId()}
	if err := check(p); err != nil {
		return nil, err
	}
	var (
		fr      db.FriendRequest
		contact db.Contact
		from    db.Member // the requester
	)
	err := s.store.InTx(ctx, func(q *db.Queries) error {
		// Only the addressee finds the request: to anyone else (the requester
		// included) it does not exist.
		found, err := q.GetIncomingFriendRequest(ctx, db.GetIncomingFriendRequestParams{ID: p.RequestID, ToMemberID: me})
		if err != nil {
			return fmt.Errorf("get request: %w", err)
		}
		if err := q.LockContactPair(ctx, db.LockContactPairParams{A: found.FromMemberID, B: me}); err != nil {
			return fmt.Errorf("lock pair: %w", err)
		}
		if from, err = q.GetMemberByID(ctx, found.FromMemberID); err != nil {
			return fmt.Errorf("get requester: %w", err)
		}
		if req.GetAccept() {
			fr, contact, err = acceptRequest(ctx, q, p.RequestID, me)
			return err
		}
		// The conditional update is the arbiter: of racing answers, the one
		// that finds the request still pending wins, the others get nothing.
		fr, err = q.UpdateFriendRequestStatus(ctx, db.UpdateFriendRequestStatusParams{
			Status: store.RequestDeclined, ID: p.RequestID, ToMemberID: me,
		})
		if errors.Is(err, store.ErrNotFound) {
			return errAlreadyAnswered
		}
		if err != nil {
			return fmt.Errorf("decline request: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.answered(ctx, fr)
	res := &v1.RespondFriendRequestResponse{Request: toFriendRequest(fr, from)}
	if req.GetAccept() {
		res.Contact = toContact(contact, from)
	}
	return res, nil
}

func (s *ContactServer) ListContacts(ctx context.Context, req *v1.ListContactsRequest) (*v1.ListContactsResponse, error) {
	me := callerFrom(ctx).MemberID
	pg, err := parseIDPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	rows, err := s.q.ListContactsByOwner(ctx, db.ListContactsByOwnerParams{OwnerID: me, AfterMemberID: pg.after, MaxRows: pg.limit()})
	if err != nil {
		return nil, fmt.Errorf("list contacts: %w", err)
	}
	contacts, next := pageOf(pg, rows, func(r db.ListContactsByOwnerRow) int64 { return r.Contact.MemberID },
		func(r db.ListContactsByOwnerRow) *v1.Contact { return toContact(r.Contact, r.Member) })
	return &v1.ListContactsResponse{Contacts: contacts, NextPageToken: next}, nil
}

type setRemarkParams struct {
	MemberID int64  `name:"member_id" validate:"gt=0"`
	Remark   string `name:"remark" validate:"text,max=32"`
}

func (s *ContactServer) SetContactRemark(ctx context.Context, req *v1.SetContactRemarkRequest) (*v1.SetContactRemarkResponse, error) {
	me := callerFrom(ctx).MemberID
	p := setRemarkParams{MemberID: req.GetMemberId(), Remark: strings.TrimSpace(req.GetRemark())}
	if err := check(p); err != nil {
		return nil, err
	}
	// Only the caller's own row is updated: no contact, no row, not_found.
	c, err := s.q.UpdateContactRemark(ctx, db.UpdateContactRemarkParams{Remark: p.Remark, OwnerID: me, MemberID: p.MemberID})
	if err != nil {
		return nil, fmt.Errorf("set remark: %w", err)
	}
	m, err := s.q.GetMemberByID(ctx, c.MemberID)
	if err != nil {
		return nil, fmt.Errorf("get contact member: %w", err)
	}
	return &v1.SetContactRemarkResponse{Contact: toContact(c, m)}, nil
}

func (s *ContactServer) RemoveContact(ctx context.Context, req *v1.RemoveContactRequest) (*v1.RemoveContactResponse, error) {
	me := callerFrom(ctx).MemberID
	p := contactMemberParams{MemberID: req.GetMemberId()}
	if err := check(p); err != nil {
		return nil, err
	}
	// One statement removes both sides, so it needs no transaction.
	if err := deletedOne(s.q.DeleteContactPair(ctx, db.DeleteContactPairParams{A: me, B: p.MemberID})); err != nil {
		return nil, fmt.Errorf("remove contact: %w", err)
	}
	// The other side learns who left; the caller's other devices learn whom
	// the caller removed.
	s.publish([]int64{p.MemberID}, contactRemoved(me))
	s.publish([]int64{me}, contactRemoved(p.MemberID))
	return &v1.RemoveContactResponse{}, nil
}

func (s *ContactServer) BlockMember(ctx context.Context, req *v1.BlockMemberRequest) (*v1.BlockMemberResponse, error) {
	me := callerFrom(ctx).MemberID
	p := contactMemberParams{MemberID: req.GetMemberId()}
	if err := check(p); err != nil {
		return nil, err
	}
	if p.MemberID == me {
		return nil, invalid("member_id: cannot block yourself")
	}
	var removed int64
	err := s.store.InTx(ctx, func(q *db.Queries) error {
		if err := q.LockContactPair(ctx, db.LockContactPairParams{A: me, B: p.MemberID}); err != nil {
			return fmt.Errorf("lock pair: %w", err)
		}
		if _, err := q.GetMemberByID(ctx, p.MemberID); err != nil {
			return fmt.Errorf("get member: %w", err)
		}
		if err := q.CreateBlock(ctx, db.CreateBlockParams{BlockerID: me, BlockedID: p.MemberID}); err != nil {
			return fmt.Errorf("create block: %w", err)
		}
		if _, err := q.ResolvePendingFriendRequestsBetween(ctx, db.ResolvePendingFriendRequestsBetweenParams{
			Status: store.RequestDeclined, A: me, B: p.MemberID,
		}); err != nil {
			return fmt.Errorf("decline requests: %w", err)
		}
		var err error
		if removed, err = q.DeleteContactPair(ctx, db.DeleteContactPairParams{A: me, B: p.MemberID}); err != nil {
			return fmt.Errorf("remove contact: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Nothing goes to the blocked member: the block stays invisible to them.
	// The caller's other devices drop the contact.
	if removed > 0 {
		s.publish([]int64{me}, contactRemoved(p.MemberID))
	}
	return &v1.BlockMemberResponse{}, nil
}

func (s *ContactServer) UnblockMember(ctx context.Context, req *v1.UnblockMemberRequest) (*v1.UnblockMemberResponse, error) {
	me := callerFrom(ctx).MemberID
	p := contactMemberParams{MemberID: req.GetMemberId()}
	if err := check(p); err != nil {
		return nil, err
	}
	if err := deletedOne(s.q.DeleteBlock(ctx, db.DeleteBlockParams{BlockerID: me, BlockedID: p.MemberID})); err != nil {
		return nil, fmt.Errorf("unblock: %w", err)
	}
	return &v1.UnblockMemberResponse{}, nil
}

func (s *ContactServer) ListBlocked(ctx context.Context, req *v1.ListBlockedRequest) (*v1.ListBlockedResponse, error) {
	me := callerFrom(ctx).MemberID
	pg, err := parseIDPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	rows, err := s.q.ListBlockedByBlocker(ctx, db.ListBlockedByBlockerParams{BlockerID: me, AfterMemberID: pg.after, MaxRows: pg.limit()})
	if err != nil {
		return nil, fmt.Errorf("list blocked: %w", err)
	}
	members, next := pageOf(pg, rows, func(r db.ListBlockedByBlockerRow) int64 { return r.Member.ID },
		func(r db.ListBlockedByBlockerRow) *v1.Member { return toMember(r.Member, false) })
	return &v1.ListBlockedResponse{Members: members, NextPageToken: next}, nil
}
