package server_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// contactTables are the tables ContactService writes: a refused call leaves
// them as they were.
var contactTables = []string{"friend_requests", "contacts", "blocks", "conversations", "conversation_members", "members"}

const (
	pending  = v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_PENDING
	accepted = v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_ACCEPTED
	declined = v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_DECLINED
	incoming = v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_INCOMING
	outgoing = v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_OUTGOING
)

// request is a friend request from → to as viewer sees it (other is the side
// that is not viewer), with anyTime; respondedAt is set unless pending.
func request(id int64, from, to, viewer *client, status v1.FriendRequestStatus, note string) *v1.FriendRequest {
	r := &v1.FriendRequest{
		Id: id, FromMemberId: from.ID, ToMemberId: to.ID, Status: status, Note: note, CreatedAt: set, Other: from.public(),
	}
	if viewer == from {
		r.Other = to.public()
	}
	if status != pending {
		r.RespondedAt = set
	}
	return r
}

// requestsOf lists c's friend requests in one direction, newest first.
func requestsOf(t testing.TB, c *client, dir v1.FriendRequestDirection) []*v1.FriendRequest {
	t.Helper()
	var out []*v1.FriendRequest
	for _, page := range pages(t, func(token string) (*v1.ListFriendRequestsResponse, error) {
		return c.Contacts.ListFriendRequests(context.Background(), &v1.ListFriendRequestsRequest{Direction: dir, PageSize: 100, PageToken: token})
	}) {
		out = append(out, page.GetRequests()...)
	}
	return out
}

// statuses maps each of c's requests, both directions, to its status.
func statuses(t testing.TB, c *client) map[int64]v1.FriendRequestStatus {
	t.Helper()
	out := map[int64]v1.FriendRequestStatus{}
	for _, r := range append(requestsOf(t, c, incoming), requestsOf(t, c, outgoing)...) {
		out[r.GetId()] = r.GetStatus()
	}
	return out
}

// areContacts reports whether a and b list each other as contacts, and fails
// the test when only one side does (half a friendship).
func areContacts(t testing.TB, a, b *client) bool {
	t.Helper()
	ab, ba := slices.Contains(contactIDs(t, a), b.ID), slices.Contains(contactIDs(t, b), a.ID)
	if ab != ba {
		t.Fatalf("half a friendship: %d lists %d: %v, but %d lists %d: %v", a.ID, b.ID, ab, b.ID, a.ID, ba)
	}
	return ab
}

// directWith is the direct conversation c has with peer in ListConversations,
// nil when there is none.
func directWith(t testing.TB, c, peer *client) *v1.Conversation {
	t.Helper()
	for _, page := range pages(t, func(token string) (*v1.ListConversationsResponse, error) {
		return c.Chat.ListConversations(context.Background(), &v1.ListConversationsRequest{PageSize: 100, PageToken: token})
	}) {
		for _, cv := range page.GetConversations() {
			if cv.GetPeer().GetId() == peer.ID {
				return cv
			}
		}
	}
	return nil
}

// TestContactLifecycle walks request → list → accept → contacts (with the
// conversation) → remark → remove → befriend again, mixing Connect and gRPC.
func TestContactLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	a, b := e.register(t, "Alice"), e.register(t, "Bob")
	bg := e.grpcClients(b.Token)
	bg.ID, bg.Nickname = b.ID, b.Nickname
	var r *v1.FriendRequest
	var conv int64

	step(t, "a request is pending on both sides", func(t *testing.T) {
		sent, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID, Note: "  hi, it's Alice  "})
		if err != nil {
			t.Fatalf("SendFriendRequest: %v", err)
		}
		r = sent.GetRequest()
		if r.GetId() == 0 {
			t.Fatalf("SendFriendRequest returned no id: %v", r)
		}
		wantProto(t, "sent request", request(r.GetId(), a, b, a, pending, "hi, it's Alice"), r, anyTime)
		wantProto(t, "b's incoming requests", []*v1.FriendRequest{request(r.GetId(), a, b, b, pending, "hi, it's Alice")}, requestsOf(t, bg, incoming), anyTime)
		wantProto(t, "a's outgoing requests", []*v1.FriendRequest{r}, requestsOf(t, a, outgoing))
	})

	step(t, "accepting makes both sides contacts with one direct conversation", func(t *testing.T) {
		acc, err := bg.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: r.GetId(), Accept: true})
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		if conv = acc.GetContact().GetConversationId(); conv == 0 {
			t.Fatalf("accept opened no conversation: %v", acc)
		}
		wantProto(t, "accept", &v1.RespondFriendRequestResponse{
			Request: request(r.GetId(), a, b, b, accepted, "hi, it's Alice"),
			Contact: &v1.Contact{Member: a.public(), ConversationId: conv, CreatedAt: set},
		}, acc, anyTime)
		wantProto(t, "a's contacts", []*v1.Contact{{Member: b.public(), ConversationId: conv, CreatedAt: set}}, contactsOf(t, a), anyTime)
		wantProto(t, "b's contacts", []*v1.Contact{{Member: a.public(), ConversationId: conv, CreatedAt: set}}, contactsOf(t, bg), anyTime)
		for _, side := range [][2]*client{{a, b}, {b, a}} {
			wantProto(t, "the pair's direct conversation", &v1.Conversation{
				Id: conv, Kind: v1.ConversationKind_CONVERSATION_KIND_DIRECT,
				With: &v1.Conversation_Peer{Peer: side[1].public()}, UpdatedAt: set,
			}, directWith(t, side[0], side[1]), anyTime)
		}
	})

	step(t, "contacts cannot ask again either way round", func(t *testing.T) {
		_, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID})
		wantCode(t, err, connect.CodeAlreadyExists)
		_, err = bg.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: a.ID})
		wantCode(t, err, connect.CodeAlreadyExists)
	})

	step(t, "a remark is the caller's alone", func(t *testing.T) {
		rem, err := a.Contacts.SetContactRemark(ctx, &v1.SetContactRemarkRequest{MemberId: b.ID, Remark: " Bobby "})
		if err != nil {
			t.Fatalf("SetContactRemark: %v", err)
		}
		bobby := &v1.Contact{Member: b.public(), Remark: "Bobby", ConversationId: conv, CreatedAt: set}
		wantProto(t, "SetContactRemark", bobby, rem.GetContact(), anyTime)
		la, err := a.Contacts.ListContacts(ctx, &v1.ListContactsRequest{})
		if err != nil {
			t.Fatalf("ListContacts: %v", err)
		}
		wantProto(t, "a's contacts", &v1.ListContactsResponse{Contacts: []*v1.Contact{bobby}}, la, anyTime)
		wantProto(t, "b's contacts", []*v1.Contact{{Member: a.public(), ConversationId: conv, CreatedAt: set}}, contactsOf(t, bg), anyTime)
	})

	step(t, "removing drops both sides and keeps the conversation", func(t *testing.T) {
		if _, err := bg.Contacts.RemoveContact(ctx, &v1.RemoveContactRequest{MemberId: a.ID}); err != nil {
			t.Fatalf("RemoveContact: %v", err)
		}
		if areContacts(t, a, b) {
			t.Fatal("still contacts after RemoveContact")
		}
		if cv := directWith(t, a, b); cv.GetId() != conv {
			t.Fatalf("a's conversation with b after the remove: %v", cv)
		}
		_, err := a.Contacts.RemoveContact(ctx, &v1.RemoveContactRequest{MemberId: b.ID})
		wantCode(t, err, connect.CodeNotFound)
		_, err = a.Contacts.SetContactRemark(ctx, &v1.SetContactRemarkRequest{MemberId: b.ID, Remark: "x"})
		wantCode(t, err, connect.CodeNotFound)
	})

	step(t, "befriending again finds the same conversation", func(t *testing.T) {
		if conv2 := makeContacts(t, bg, a); conv2 != conv {
			t.Fatalf("re-befriended into conversation %d, want %d", conv2, conv)
		}
	})
}

// TestSendFriendRequestRefusals covers every refusal of SendFriendRequest.
func TestSendFriendRequestRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	a, b, c := e.register(t, "a"), e.register(t, "b"), e.register(t, "c")

	_, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: a.ID})
	wantInvalid(t, err, "member_id")
	_, err = a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: 1 << 50})
	wantCode(t, err, connect.CodeNotFound)

	// A duplicate pending request.
	first, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID, Note: "again"})
	wantCode(t, err, connect.CodeAlreadyExists)

	// c blocks a: a is refused, and the refusal does not name the block.
	if _, err := c.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: a.ID}); err != nil {
		t.Fatal(err)
	}
	_, err = a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: c.ID})
	wantCode(t, err, connect.CodePermissionDenied)
	if strings.Contains(strings.ToLower(err.Error()), "block") {
		t.Fatalf("refusal %q reveals the block", err)
	}
	// The blocker is told to unblock first.
	_, err = c.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: a.ID})
	wantCode(t, err, connect.CodeFailedPrecondition)
	if got := statuses(t, c); len(got) != 0 {
		t.Fatalf("requests involving c: %v, want none", got)
	}

	// After a decline, asking again is allowed.
	if _, err := b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: first.GetRequest().GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID}); err != nil {
		t.Fatalf("request after decline: %v", err)
	}
}

// TestSendFriendRequestMeetsReverse: when B already asked A, A asking B
// accepts B's request, and they are contacts once.
func TestSendFriendRequestMeetsReverse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	a, b := e.register(t, "a"), e.register(t, "b")
	bev := e.connect(t, b)

	first, err := b.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: a.ID, Note: "from b"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID, Note: "from a"})
	if err != nil {
		t.Fatalf("reverse request: %v", err)
	}
	id := first.GetRequest().GetId()
	wantProto(t, "the reverse request's answer: b's request, accepted", request(id, b, a, a, accepted, "from b"), res.GetRequest(), anyTime)
	if !areContacts(t, a, b) {
		t.Fatal("not contacts")
	}
	// Nothing is left pending, either way.
	for _, c := range []*client{a, b} {
		wantProto(t, "requests", map[int64]v1.FriendRequestStatus{id: accepted}, statuses(t, c))
	}
	ev := bev.nextWhere(func(ev *v1.Event) bool { return ev.GetFriendRequestAnswered() != nil })
	wantProto(t, "b's event", request(id, b, a, b, accepted, "from b"), ev.GetFriendRequestAnswered(), anyTime)
}

// TestListFriendRequests pages newest first in both directions and shows
// each request's status.
func TestListFriendRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	me := e.register(t, "me")

	_, err := me.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{})
	wantInvalid(t, err, "direction")
	_, err = me.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{Direction: 7})
	wantInvalid(t, err, "direction")

	var want []*v1.FriendRequest // newest first
	for i := range 5 {
		o := e.register(t, fmt.Sprintf("sender %d", i))
		res, err := o.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: me.ID, Note: strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		status := pending
		if i == 1 {
			status = declined // below
		}
		want = append([]*v1.FriendRequest{request(res.GetRequest().GetId(), o, me, me, status, strconv.Itoa(i))}, want...)
	}
	if _, err := me.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: want[3].GetId()}); err != nil {
		t.Fatal(err)
	}

	ps := pages(t, func(token string) (*v1.ListFriendRequestsResponse, error) {
		return me.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{Direction: incoming, PageSize: 2, PageToken: token})
	})
	if len(ps) != 3 {
		t.Fatalf("%d pages, want 3", len(ps))
	}
	var got []*v1.FriendRequest
	for _, p := range ps {
		got = append(got, p.GetRequests()...)
	}
	wantProto(t, "incoming requests, newest first", want, got, anyTime)
	if out := requestsOf(t, me, outgoing); len(out) != 0 {
		t.Fatalf("outgoing = %v, want none", out)
	}
	_, err = me.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{Direction: incoming, PageToken: "not-a-token"})
	wantInvalid(t, err, "page_token")
}

// TestRespondFriendRequest: only the addressee answers, once.
func TestRespondFriendRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	a, b, c := e.register(t, "a"), e.register(t, "b"), e.register(t, "c")
	sent, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID})
	if err != nil {
		t.Fatal(err)
	}
	id := sent.GetRequest().GetId()

	for name, cl := range map[string]*client{"requester": a, "stranger": c} {
		for _, accept := range []bool{true, false} {
			_, err := cl.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: id, Accept: accept})
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("%s answering (accept=%v): %v, want not_found", name, accept, err)
			}
		}
	}
	_, err = b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: 1 << 50, Accept: true})
	wantCode(t, err, connect.CodeNotFound)

	dec, err := b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: id})
	if err != nil {
		t.Fatalf("decline: %v", err)
	}
	wantProto(t, "decline", &v1.RespondFriendRequestResponse{Request: request(id, a, b, b, declined, "")}, dec, anyTime)
	for _, accept := range []bool{true, false} {
		_, err = b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: id, Accept: accept})
		wantCode(t, err, connect.CodeFailedPrecondition)
	}
	if areContacts(t, a, b) {
		t.Fatal("contacts after a decline")
	}
	// No conversation was opened, not even one nobody can see.
	if rows := e.dbRows(t, "conversations", "true"); len(rows) != 0 {
		t.Fatalf("conversations after decline: %v", rows)
	}
}

// TestContactEvents checks the pushes over real WebSockets, and that a block
// pushes nothing to the blocked member.
func TestContactEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	a, b, c := e.register(t, "Ann"), e.register(t, "Ben"), e.register(t, "Cat")
	a2 := e.login(t, a.Phone, a.Password) // a's second device
	aev, a2ev, bev := e.connect(t, a), e.connect(t, a2), e.connect(t, b)
	var id int64

	step(t, "a request reaches the addressee", func(t *testing.T) {
		sent, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID, Note: "hello"})
		if err != nil {
			t.Fatal(err)
		}
		id = sent.GetRequest().GetId()
		wantProto(t, "b's event", &v1.Event{At: set, Kind: &v1.Event_FriendRequestReceived{
			FriendRequestReceived: request(id, a, b, b, pending, "hello"),
		}}, bev.next(), anyTime)
	})

	step(t, "the answer reaches every device of the requester", func(t *testing.T) {
		if _, err := b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: id, Accept: true}); err != nil {
			t.Fatal(err)
		}
		answered := request(id, a, b, a, accepted, "hello")
		wantProto(t, "a's event", answered, aev.next().GetFriendRequestAnswered(), anyTime)
		wantProto(t, "a's second device's event", answered, a2ev.next().GetFriendRequestAnswered(), anyTime)
	})

	step(t, "a removal reaches the other side and the remover's other devices", func(t *testing.T) {
		if _, err := a.Contacts.RemoveContact(ctx, &v1.RemoveContactRequest{MemberId: b.ID}); err != nil {
			t.Fatal(err)
		}
		wantProto(t, "b's event", &v1.ContactRemoved{MemberId: a.ID}, bev.next().GetContactRemoved())
		wantProto(t, "a's other device's event", &v1.ContactRemoved{MemberId: b.ID}, a2ev.next().GetContactRemoved())
	})

	step(t, "a block is not pushed to the blocked member", func(t *testing.T) {
		sent, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID})
		if err != nil {
			t.Fatal(err)
		}
		bev.next() // the request
		if _, err := b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: sent.GetRequest().GetId(), Accept: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: b.ID}); err != nil {
			t.Fatal(err)
		}
		// The next event b sees must be c's request, sent after the block.
		if _, err := c.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID}); err != nil {
			t.Fatal(err)
		}
		if ev := bev.next(); ev.GetFriendRequestReceived().GetFromMemberId() != c.ID {
			t.Fatalf("b's next event after the block is %v, want c's request", ev)
		}
		// The blocker's other device drops the contact.
		got := a2ev.nextWhere(func(ev *v1.Event) bool { return ev.GetContactRemoved() != nil })
		wantProto(t, "a's other device's event", &v1.ContactRemoved{MemberId: b.ID}, got.GetContactRemoved())
	})
}

// TestBlockMember: a block removes the contact, declines pending requests
// both ways, is idempotent, lists, and lifts.
func TestBlockMember(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	a, b, c, d := e.register(t, "a"), e.register(t, "b"), e.register(t, "c"), e.register(t, "d")
	makeContacts(t, a, b)
	fromC, err := c.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: a.ID})
	if err != nil {
		t.Fatal(err)
	}
	toD, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: d.ID})
	if err != nil {
		t.Fatal(err)
	}

	step(t, "a block ends the contact and declines pending requests both ways", func(t *testing.T) {
		for _, m := range []*client{b, c, d} {
			if _, err := a.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: m.ID}); err != nil {
				t.Fatalf("block %d: %v", m.ID, err)
			}
		}
		if areContacts(t, a, b) {
			t.Fatal("still contacts after the block")
		}
		byID := map[int64]*v1.FriendRequest{}
		for _, r := range append(requestsOf(t, a, incoming), requestsOf(t, a, outgoing)...) {
			byID[r.GetId()] = r
		}
		wantProto(t, "c's request to a", request(fromC.GetRequest().GetId(), c, a, a, declined, ""), byID[fromC.GetRequest().GetId()], anyTime)
		wantProto(t, "a's request to d", request(toD.GetRequest().GetId(), a, d, a, declined, ""), byID[toD.GetRequest().GetId()], anyTime)
	})

	step(t, "blocking twice is fine, yourself or nobody is not", func(t *testing.T) {
		if _, err := a.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: b.ID}); err != nil {
			t.Fatalf("block twice: %v", err)
		}
		_, err = a.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: a.ID})
		wantInvalid(t, err, "member_id")
		_, err = a.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: 1 << 50})
		wantCode(t, err, connect.CodeNotFound)
	})

	step(t, "the blocked cannot befriend the blocker", func(t *testing.T) {
		for _, m := range []*client{b, c, d} {
			_, err := m.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: a.ID})
			wantCode(t, err, connect.CodePermissionDenied)
		}
	})

	step(t, "ListBlocked pages by member id, without phones", func(t *testing.T) {
		var listed []*v1.Member
		for _, p := range pages(t, func(token string) (*v1.ListBlockedResponse, error) {
			return a.Contacts.ListBlocked(ctx, &v1.ListBlockedRequest{PageSize: 2, PageToken: token})
		}) {
			listed = append(listed, p.GetMembers()...)
		}
		wantProto(t, "ListBlocked", []*v1.Member{b.public(), c.public(), d.public()}, listed, anyTime)
	})

	step(t, "unblocking lets the member ask again and restores nothing", func(t *testing.T) {
		if _, err := a.Contacts.UnblockMember(ctx, &v1.UnblockMemberRequest{MemberId: b.ID}); err != nil {
			t.Fatalf("unblock: %v", err)
		}
		_, err = a.Contacts.UnblockMember(ctx, &v1.UnblockMemberRequest{MemberId: b.ID})
		wantCode(t, err, connect.CodeNotFound)
		_, err = a.Contacts.UnblockMember(ctx, &v1.UnblockMemberRequest{MemberId: 1 << 50})
		wantCode(t, err, connect.CodeNotFound)
		if areContacts(t, a, b) {
			t.Fatal("unblock restored the contact")
		}
		if _, err := b.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: a.ID}); err != nil {
			t.Fatalf("request after unblock: %v", err)
		}
	})
}

// TestContactValidation: malformed ids and over-long fields are
// invalid_argument naming the field; lengths count characters, not bytes.
func TestContactValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	a, b := e.register(t, "a"), e.register(t, "b")
	cc := a.Contacts
	cases := []struct {
		name, field string
		call        func() error
	}{
		{"send id 0", "member_id", call(cc.SendFriendRequest, &v1.SendFriendRequestRequest{MemberId: 0})},
		{"send id negative", "member_id", call(cc.SendFriendRequest, &v1.SendFriendRequestRequest{MemberId: -5})},
		{"send note 257", "note", call(cc.SendFriendRequest, &v1.SendFriendRequestRequest{MemberId: b.ID, Note: strings.Repeat("é", 257)})},
		{"respond id 0", "request_id", call(cc.RespondFriendRequest, &v1.RespondFriendRequestRequest{RequestId: 0, Accept: true})},
		{"remark id -1", "member_id", call(cc.SetContactRemark, &v1.SetContactRemarkRequest{MemberId: -1})},
		{"remark 33", "remark", call(cc.SetContactRemark, &v1.SetContactRemarkRequest{MemberId: b.ID, Remark: strings.Repeat("日", 33)})},
		{"remove id 0", "member_id", call(cc.RemoveContact, &v1.RemoveContactRequest{})},
		{"block id 0", "member_id", call(cc.BlockMember, &v1.BlockMemberRequest{})},
		{"unblock id 0", "member_id", call(cc.UnblockMember, &v1.UnblockMemberRequest{MemberId: -1})},
		{"contacts page_size", "page_size", call(cc.ListContacts, &v1.ListContactsRequest{PageSize: -1})},
		{"contacts page_token", "page_token", call(cc.ListContacts, &v1.ListContactsRequest{PageToken: "@@"})},
		{"blocked page_token", "page_token", call(cc.ListBlocked, &v1.ListBlockedRequest{PageToken: "AAAA"})},
		{"requests page_size", "page_size", call(cc.ListFriendRequests, &v1.ListFriendRequestsRequest{Direction: outgoing, PageSize: -1})},
	}
	before := e.dbSnapshot(t, contactTables...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantInvalid(t, tc.call(), tc.field) })
	}
	before.wantUnchanged(t, "invalid calls")

	// At the limits, in multi-byte characters, everything is accepted.
	sent, err := cc.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID, Note: strings.Repeat("é", 256)})
	if err != nil {
		t.Fatalf("256-character note: %v", err)
	}
	if _, err := b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: sent.GetRequest().GetId(), Accept: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.SetContactRemark(ctx, &v1.SetContactRemarkRequest{MemberId: b.ID, Remark: strings.Repeat("日", 32)}); err != nil {
		t.Fatalf("32-character remark: %v", err)
	}
}

// TestContactAuthorizationMatrix: for every method, a caller who may not act
// is refused (permission_denied or not_found), or for lists sees nothing of
// others, and the database is untouched.
func TestContactAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	// a and b are contacts; a blocked d; a has a pending request to x;
	// stranger knows nobody.
	a, b, d, x, stranger := e.register(t, "a"), e.register(t, "b"), e.register(t, "d"), e.register(t, "x"), e.register(t, "stranger")
	makeContacts(t, a, b)
	if _, err := a.Contacts.SetContactRemark(ctx, &v1.SetContactRemarkRequest{MemberId: b.ID, Remark: "bee"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: d.ID}); err != nil {
		t.Fatal(err)
	}
	toX, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: x.ID})
	if err != nil {
		t.Fatal(err)
	}
	reqID := toX.GetRequest().GetId()

	refused := []connect.Code{connect.CodePermissionDenied, connect.CodeNotFound}
	cases := []struct {
		name string
		call func() error
		want []connect.Code // nil: the call succeeds and shows nothing
	}{
		{"SendFriendRequest by blocked member", call(d.Contacts.SendFriendRequest, &v1.SendFriendRequestRequest{MemberId: a.ID, Note: "let me in"}), []connect.Code{connect.CodePermissionDenied}},
		{"RespondFriendRequest accept by requester", call(a.Contacts.RespondFriendRequest, &v1.RespondFriendRequestRequest{RequestId: reqID, Accept: true}), refused},
		{"RespondFriendRequest decline by requester", call(a.Contacts.RespondFriendRequest, &v1.RespondFriendRequestRequest{RequestId: reqID}), refused},
		{"RespondFriendRequest accept by stranger", call(stranger.Contacts.RespondFriendRequest, &v1.RespondFriendRequestRequest{RequestId: reqID, Accept: true}), refused},
		{"RespondFriendRequest accept by blocked member", call(d.Contacts.RespondFriendRequest, &v1.RespondFriendRequestRequest{RequestId: reqID, Accept: true}), refused},
		{"SetContactRemark by stranger on a", call(stranger.Contacts.SetContactRemark, &v1.SetContactRemarkRequest{MemberId: a.ID, Remark: "mine"}), refused},
		{"SetContactRemark by blocked member on a", call(d.Contacts.SetContactRemark, &v1.SetContactRemarkRequest{MemberId: a.ID, Remark: "mine"}), refused},
		{"RemoveContact by stranger of a", call(stranger.Contacts.RemoveContact, &v1.RemoveContactRequest{MemberId: a.ID}), refused},
		{"RemoveContact by stranger of b", call(stranger.Contacts.RemoveContact, &v1.RemoveContactRequest{MemberId: b.ID}), refused},
		{"RemoveContact by blocked member", call(d.Contacts.RemoveContact, &v1.RemoveContactRequest{MemberId: a.ID}), refused},
		{"BlockMember of an unknown member", call(stranger.Contacts.BlockMember, &v1.BlockMemberRequest{MemberId: 1 << 50}), refused},
		{"UnblockMember by the blocked member", call(d.Contacts.UnblockMember, &v1.UnblockMemberRequest{MemberId: a.ID}), refused},
		{"UnblockMember by stranger", call(stranger.Contacts.UnblockMember, &v1.UnblockMemberRequest{MemberId: d.ID}), refused},
		{"ListContacts by stranger", func() error {
			if got := contactsOf(t, stranger); len(got) != 0 {
				return fmt.Errorf("got %v, want no contacts", got)
			}
			return nil
		}, nil},
		{"ListFriendRequests by stranger", func() error {
			if got := statuses(t, stranger); len(got) != 0 {
				return fmt.Errorf("got %v, want no requests", got)
			}
			return nil
		}, nil},
		{"ListBlocked by blocked member", func() error {
			res, err := d.Contacts.ListBlocked(ctx, &v1.ListBlockedRequest{})
			if err != nil || len(res.GetMembers()) != 0 {
				return fmt.Errorf("got %v, %v; want nobody", res, err)
			}
			return nil
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.dbSnapshot(t, contactTables...)
			err := tc.call()
			if tc.want != nil {
				err = wantRefused(err, tc.want...)
			}
			if err != nil {
				t.Fatal(err)
			}
			before.wantUnchanged(t, "refused call")
		})
	}
}

// wantRefused returns an error unless err carries one of codes.
func wantRefused(err error, codes ...connect.Code) error {
	if err == nil {
		return fmt.Errorf("call succeeded, want one of %v", codes)
	}
	if !slices.Contains(codes, connect.CodeOf(err)) {
		return fmt.Errorf("got %v, want one of %v", err, codes)
	}
	return nil
}

// TestRespondFriendRequestRace: parallel accepts and declines of one request
// leave exactly one winner and a state that agrees with it.
func TestRespondFriendRequestRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	b := e.register(t, "b")
	for round := range 4 {
		a := e.register(t, fmt.Sprintf("a%d", round))
		sent, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID})
		if err != nil {
			t.Fatal(err)
		}
		id := sent.GetRequest().GetId()
		const n = 6
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			wins     []bool // accept flag of each success
			failures []error
		)
		for i := range n {
			accept := (i+round)%2 == 0
			wg.Go(func() {
				_, err := b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: id, Accept: accept})
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					wins = append(wins, accept)
				} else {
					failures = append(failures, err)
				}
			})
		}
		wg.Wait()
		if len(wins) != 1 {
			t.Fatalf("round %d: %d successes, want 1 (failures %v)", round, len(wins), failures)
		}
		for _, err := range failures {
			wantCode(t, err, connect.CodeFailedPrecondition)
		}
		wantStatus, wantContacts := declined, false
		if wins[0] {
			wantStatus, wantContacts = accepted, true
		}
		if got := statuses(t, a)[id]; got != wantStatus {
			t.Fatalf("round %d: status %v, want %v", round, got, wantStatus)
		}
		if got := areContacts(t, a, b); got != wantContacts {
			t.Fatalf("round %d: contacts %v, want %v", round, got, wantContacts)
		}
		// Both are in the pair's conversation exactly when they are contacts.
		for _, side := range [][2]*client{{a, b}, {b, a}} {
			if got := directWith(t, side[0], side[1]) != nil; got != wantContacts {
				t.Fatalf("round %d: %d in a conversation with %d: %v, want %v", round, side[0].ID, side[1].ID, got, wantContacts)
			}
		}
	}
}

// TestMutualFriendRequestsRace: two members asking each other at once, or
// accepting each other's requests at once, become contacts exactly once.
func TestMutualFriendRequestsRace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()

	t.Run("send both ways at once", func(t *testing.T) {
		for round := range 4 {
			a, b := e.register(t, fmt.Sprintf("sa%d", round)), e.register(t, fmt.Sprintf("sb%d", round))
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for i, pair := range [][2]*client{{a, b}, {b, a}} {
				wg.Go(func() {
					_, errs[i] = pair[0].Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: pair[1].ID})
				})
			}
			wg.Wait()
			// One opens the request, the other meets it and accepts it.
			for _, err := range errs {
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
			}
			if !areContacts(t, a, b) {
				t.Fatalf("round %d: not contacts", round)
			}
			for id, status := range statuses(t, a) {
				if status != accepted {
					t.Fatalf("round %d: request %d is %v, want accepted", round, id, status)
				}
			}
		}
	})

	t.Run("accept both ways at once", func(t *testing.T) {
		q := db.New(e.Pool)
		for round := range 4 {
			a, b := e.register(t, fmt.Sprintf("aa%d", round)), e.register(t, fmt.Sprintf("ab%d", round))
			// Two pending requests opposite ways cannot be made through the
			// API (the second accepts the first); plant them with the query
			// SendFriendRequest runs, to check that answering both at once
			// still yields one friendship.
			ab, err := q.CreateFriendRequest(ctx, db.CreateFriendRequestParams{FromMemberID: a.ID, ToMemberID: b.ID})
			if err != nil {
				t.Fatal(err)
			}
			ba, err := q.CreateFriendRequest(ctx, db.CreateFriendRequestParams{FromMemberID: b.ID, ToMemberID: a.ID})
			if err != nil {
				t.Fatal(err)
			}
			errs := make([]error, 2)
			var wg sync.WaitGroup
			wg.Go(func() {
				_, errs[0] = b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: ab.ID, Accept: true})
			})
			wg.Go(func() {
				_, errs[1] = a.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: ba.ID, Accept: true})
			})
			wg.Wait()
			ok := 0
			for _, err := range errs {
				if err == nil {
					ok++
				} else {
					wantCode(t, err, connect.CodeFailedPrecondition)
				}
			}
			if ok != 1 {
				t.Fatalf("round %d: %d accepts succeeded, want 1 (%v)", round, ok, errs)
			}
			if !areContacts(t, a, b) {
				t.Fatalf("round %d: not contacts", round)
			}
			// Both requests are settled: the one answered, and the other by it.
			wantProto(t, fmt.Sprintf("round %d: requests", round),
				map[int64]v1.FriendRequestStatus{ab.ID: accepted, ba.ID: accepted}, statuses(t, a))
		}
	})
}

// TestSeedContactsMatchesTheAPI: a contact e.seedContacts makes reads the
// same through every RPC as one made by a friend request and its accept, so
// the tests that page through thousands of seeded contacts test what the API
// makes.
func TestSeedContactsMatchesTheAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner := e.register(t, "owner")
	made := e.register(t, "member 0") // seeded members are named prefix + index
	makeContacts(t, made, owner)
	s := e.seedContacts(t, owner, "member ", 1)[0]
	seededClient := e.login(t, s.Phone, seedPassword)

	// What each side sees, with what differs by nature (ids, times) left out.
	volatile := []cmp.Option{anyTime,
		protocmp.IgnoreFields(&v1.Member{}, "id"),
		protocmp.IgnoreFields(&v1.Contact{}, "conversation_id"),
		protocmp.IgnoreFields(&v1.Conversation{}, "id"),
		protocmp.IgnoreFields(&v1.FriendRequest{}, "id", "from_member_id", "to_member_id"),
		protocmp.IgnoreFields(&v1.Message{}, "conversation_id", "sender_id", "client_msg_id"),
	}
	view := func(t *testing.T, member *client) []any {
		t.Helper()
		msg := chatSend(t, member, peerText(owner.ID, "hi", "hello"))
		reply := chatSend(t, owner, peerText(member.ID, fmt.Sprint("reply to ", member.ID), "hello back"))
		convs, err := member.Chat.ListConversations(ctx, &v1.ListConversationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return []any{
			contactsOf(t, member), requestsOf(t, member, outgoing), requestsOf(t, member, incoming),
			convs, chatHistory(t, owner, msg.GetConversationId()), reply,
			directWith(t, owner, member),
		}
	}
	wantProto(t, "seeded contact, as the API made one", view(t, made), view(t, seededClient), volatile...)
	// And owner's side: the two contacts and the two requests alike.
	cs := contactsOf(t, owner)
	if len(cs) != 2 {
		t.Fatalf("owner has %d contacts, want 2", len(cs))
	}
	wantProto(t, "owner's seeded contact", cs[0], cs[1], volatile...)
	in := requestsOf(t, owner, incoming)
	if len(in) != 2 {
		t.Fatalf("owner has %d incoming requests, want 2", len(in))
	}
	wantProto(t, "owner's seeded request", in[1], in[0], volatile...)
}

// TestContactServiceJSON speaks to ContactService the way curl does: JSON
// over HTTP/1.1, ids as strings, enums by name, errors as Connect JSON.
func TestContactServiceJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "a"), e.register(t, "b")
	const svc = "/karlmalone.v1.ContactService/"

	status, out, raw := e.postJSON(t, svc+"SendFriendRequest", a.Token, fmt.Sprintf(`{"memberId":"%d","note":"hi"}`, b.ID))
	if status != http.StatusOK {
		t.Fatalf("SendFriendRequest: %d %s", status, raw)
	}
	r, _ := out["request"].(map[string]any)
	wantFields(t, "request", map[string]any{
		"toMemberId": strconv.FormatInt(b.ID, 10), "fromMemberId": strconv.FormatInt(a.ID, 10), "status": "FRIEND_REQUEST_STATUS_PENDING",
	}, r)
	status, out, raw = e.postJSON(t, svc+"RespondFriendRequest", b.Token, fmt.Sprintf(`{"requestId":%q,"accept":true}`, r["id"]))
	if contact, _ := out["contact"].(map[string]any); status != http.StatusOK || contact["conversationId"] == nil {
		t.Fatalf("RespondFriendRequest: %d %s", status, raw)
	}
	status, out, raw = e.postJSON(t, svc+"ListContacts", a.Token, `{"pageSize":10}`)
	if contacts, _ := out["contacts"].([]any); status != http.StatusOK || len(contacts) != 1 {
		t.Fatalf("ListContacts: %d %s", status, raw)
	}

	for _, bad := range []struct{ method, body, code, field string }{
		{"SendFriendRequest", `{"memberId":"0"}`, "invalid_argument", "member_id"},
		{"SendFriendRequest", `{"memberId":"abc"}`, "invalid_argument", ""},
		{"ListFriendRequests", `{}`, "invalid_argument", "direction"},
		{"ListFriendRequests", `{"direction":"FRIEND_REQUEST_DIRECTION_SIDEWAYS"}`, "invalid_argument", ""},
		{"UnblockMember", fmt.Sprintf(`{"memberId":"%d"}`, b.ID), "not_found", ""},
	} {
		status, out, raw := e.postJSON(t, svc+bad.method, a.Token, bad.body)
		msg, _ := out["message"].(string)
		if status/100 != 4 || out["code"] != bad.code || !strings.Contains(msg, bad.field) {
			t.Fatalf("%s %s: %d %s, want %s naming %q", bad.method, bad.body, status, raw, bad.code, bad.field)
		}
	}
}
