package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/store"
)

type deleteAccountParams struct {
	Password string `name:"password" validate:"text,required,max=128"`
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
	if err := s.checkPassword(ctx, c.MemberID, p.Password, "password"); err != nil {
		return nil, err
	}
	var (
		groups   []groupLeft
		told     []int64 // contacts and co-members, for member_deleted
		sessions []int64
	)
	err := s.store.InTx(ctx, func(q *db.Queries) error {
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
			// No member is left to hear of it; an integration webhook is.
			out.events = append(out.events, groupDissolved(g.ID))
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

// exportPage is how many rows the export reads at a time: memory stays
// bounded by one page whatever the size of the history. A variable for the
// tests, which page through small histories with a tiny page.
var exportPage int32 = 500

// exportServer serves GET /v1/export: the caller's data as one JSON document,
// streamed as it is read (never held whole in memory), for a member to take
// along before DeleteAccount:
//
//	{"exportedAt": …, "member": Member (phone included),
//	 "contacts": [Contact…], "groups": [Group…],
//	 "conversations": [{"id", "kind", "peerId" | "groupId", "readSeq",
//	                    "messages": [Message…]}…]}
//
// Members, contacts, groups and messages are written as the API's protojson.
// It reads page by page, not in one snapshot: a message sent during the
// export may or may not be in it. An error after the first byte aborts the
// response, so a client never takes a truncated document for a whole one.
type exportServer struct {
	*base
	authn *Authenticator
	errs  *connect.ErrorWriter
}

func (s *exportServer) export(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c, err := s.authn.AuthenticateRequest(r)
	if err == nil {
		var m db.Member
		if m, err = s.q.GetMemberByID(ctx, c.MemberID); err == nil {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="karlmalone-export-%d.json"`, c.MemberID))
			bw := bufio.NewWriterSize(w, 32<<10)
			err = s.write(ctx, &exportWriter{w: bw}, m)
			if err == nil {
				err = bw.Flush()
			}
			if err != nil {
				s.log.WarnContext(ctx, "export aborted", "member_id", c.MemberID, "err", err)
				panic(http.ErrAbortHandler)
			}
			return
		}
	}
	cerr, ok := errors.AsType[*connect.Error](toConnectError(ctx, s.log, "export", err))
	if !ok {
		return // the client is gone
	}
	s.errs.Write(w, r, cerr)
}

// write streams the document, one page of rows at a time.
func (s *exportServer) write(ctx context.Context, w *exportWriter, m db.Member) error {
	me := m.ID
	w.raw(`{"exportedAt":`)
	w.json(s.now().UTC().Format(time.RFC3339Nano))
	w.raw(`,"member":`)
	w.proto(toMember(m, true))
	w.raw(`,"contacts":[`)
	err := exportPages(w, func(after int64) ([]db.ListContactsByOwnerRow, error) {
		return s.q.ListContactsByOwner(ctx, db.ListContactsByOwnerParams{OwnerID: me, AfterMemberID: after, MaxRows: exportPage})
	}, func(r db.ListContactsByOwnerRow) int64 {
		w.proto(toContact(r.Contact, r.Member))
		return r.Contact.MemberID
	})
	if err != nil {
		return fmt.Errorf("list contacts: %w", err)
	}
	w.raw(`],"groups":[`)
	err = exportPages(w, func(after int64) ([]db.ListGroupsByMemberRow, error) {
		return s.q.ListGroupsByMember(ctx, db.ListGroupsByMemberParams{MemberID: me, AfterConversationID: after, MaxRows: exportPage})
	}, func(r db.ListGroupsByMemberRow) int64 {
		w.proto(toGroup(r.Group))
		return r.Group.ConversationID
	})
	if err != nil {
		return fmt.Errorf("list groups: %w", err)
	}
	w.raw(`],"conversations":[`)
	err = exportPages(w, func(after int64) ([]db.ListConversationsForExportRow, error) {
		return s.q.ListConversationsForExport(ctx, db.ListConversationsForExportParams{MemberID: me, AfterID: after, MaxRows: exportPage})
	}, func(cv db.ListConversationsForExportRow) int64 {
		s.writeConversation(ctx, w, cv)
		return cv.ID
	})
	if err != nil {
		return err
	}
	w.raw("]}\n")
	return w.err
}

// writeConversation writes one conversation with its messages; its error is w's.
func (s *exportServer) writeConversation(ctx context.Context, w *exportWriter, cv db.ListConversationsForExportRow) {
	head := struct {
		ID      int64  `json:"id,string"`
		Kind    string `json:"kind"`
		PeerID  int64  `json:"peerId,string,omitempty"`
		GroupID int64  `json:"groupId,string,omitempty"`
		ReadSeq int64  `json:"readSeq,string"`
	}{ID: cv.ID, Kind: v1.ConversationKind(cv.Kind).String(), PeerID: cv.PeerID, GroupID: deref(cv.GroupID), ReadSeq: cv.ReadSeq}
	b, err := json.Marshal(head)
	if err != nil {
		w.err = err
		return
	}
	w.raw(string(b[:len(b)-1]) + `,"messages":[`)
	err = exportPages(w, func(after int64) ([]db.ListMessagesAfterSeqRow, error) {
		return s.q.ListMessagesAfterSeq(ctx, db.ListMessagesAfterSeqParams{ConversationID: cv.ID, AfterSeq: after, MaxRows: exportPage})
	}, func(r db.ListMessagesAfterSeqRow) int64 {
		w.proto(toReadMessage(messageRow(r)))
		return r.Message.Seq
	})
	if err != nil && w.err == nil {
		w.err = fmt.Errorf("list messages: %w", err)
	}
	w.raw("]}")
}

// exportPages writes the items of a JSON array read a page at a time:
// fetch reads the page after a key, write writes one row and returns its
// key. It stops at a short page, or at w's first error.
func exportPages[R any](w *exportWriter, fetch func(after int64) ([]R, error), write func(R) int64) error {
	list := w.list()
	for after := int64(0); w.err == nil; {
		rows, err := fetch(after)
		if err != nil {
			return err
		}
		for _, r := range rows {
			list.item()
			after = write(r)
		}
		if len(rows) < int(exportPage) {
			break
		}
	}
	return w.err
}

// exportWriter writes JSON pieces and keeps the first error, so the document
// reads as a template.
type exportWriter struct {
	w   *bufio.Writer
	err error
}

func (w *exportWriter) raw(s string) {
	if w.err == nil {
		_, w.err = w.w.WriteString(s)
	}
}

func (w *exportWriter) json(v any) {
	if w.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		w.err = err
		return
	}
	_, w.err = w.w.Write(b)
}

func (w *exportWriter) proto(m proto.Message) {
	if w.err != nil {
		return
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		w.err = err
		return
	}
	_, w.err = w.w.Write(b)
}

// list separates the items of a JSON array.
func (w *exportWriter) list() *exportList { return &exportList{w: w} }

type exportList struct {
	w    *exportWriter
	more bool
}

func (l *exportList) item() {
	if l.more {
		l.w.raw(",")
	}
	l.more = true
}
