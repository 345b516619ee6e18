package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// ctPairContacts counts the contact rows between a and b (2 when they are
// contacts, 0 when not; anything else is a bug).
func ctPairContacts(t testing.TB, e *env, a, b int64) int {
	t.Helper()
	return e.count(t, `SELECT count(*) FROM contacts WHERE (owner_id = $1 AND member_id = $2) OR (owner_id = $2 AND member_id = $1)`, a, b)
}

// ctSnapshot renders every row ContactService can touch, to show that a
// refused call changed nothing.
func ctSnapshot(t testing.TB, pool *pgxpool.Pool) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{"friend_requests", "contacts", "blocks", "conversations", "conversation_members", "members"} {
		rows, err := pool.Query(t.Context(), `SELECT row_to_json(t)::text FROM `+table+` t ORDER BY row_to_json(t)::text`)
		if err != nil {
			t.Fatalf("snapshot %s: %v", table, err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatalf("snapshot %s: %v", table, err)
			}
			fmt.Fprintf(&b, "%s %s\n", table, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("snapshot %s: %v", table, err)
		}
	}
	return b.String()
}

// TestContactLifecycle walks request → list → accept → contacts (with the
// conversation) → remark → remove → befriend again, mixing Connect and gRPC.
func TestContactLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	a, b := e.register(t, "Alice"), e.register(t, "Bob")
	bg := e.grpcClients(b.Token)
	bg.ID = b.ID

	sent, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID, Note: "  hi, it's Alice  "})
	if err != nil {
		t.Fatalf("SendFriendRequest: %v", err)
	}
	r := sent.GetRequest()
	if r.GetId() == 0 || r.GetFromMemberId() != a.ID || r.GetToMemberId() != b.ID ||
		r.GetStatus() != v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_PENDING || r.GetNote() != "hi, it's Alice" ||
		r.GetOther().GetId() != b.ID || r.GetOther().GetPhone() != "" || r.GetCreatedAt() == nil || r.GetRespondedAt() != nil {
		t.Fatalf("SendFriendRequest returned %v", r)
	}

	in, err := bg.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{Direction: v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_INCOMING})
	if err != nil {
		t.Fatalf("ListFriendRequests incoming: %v", err)
	}
	if len(in.GetRequests()) != 1 || in.GetRequests()[0].GetId() != r.GetId() || in.GetRequests()[0].GetOther().GetNickname() != "Alice" ||
		in.GetRequests()[0].GetOther().GetPhone() != "" {
		t.Fatalf("incoming = %v", in.GetRequests())
	}
	out, err := a.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{Direction: v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_OUTGOING})
	if err != nil {
		t.Fatalf("ListFriendRequests outgoing: %v", err)
	}
	if len(out.GetRequests()) != 1 || out.GetRequests()[0].GetOther().GetNickname() != "Bob" {
		t.Fatalf("outgoing = %v", out.GetRequests())
	}

	acc, err := bg.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: r.GetId(), Accept: true})
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	conv := acc.GetContact().GetConversationId()
	if acc.GetRequest().GetStatus() != v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_ACCEPTED || acc.GetRequest().GetRespondedAt() == nil ||
		acc.GetContact().GetMember().GetId() != a.ID || conv == 0 {
		t.Fatalf("accept returned %v", acc)
	}
	if n := ctPairContacts(t, e, a.ID, b.ID); n != 2 {
		t.Fatalf("%d contact rows, want 2", n)
	}
	if n := e.count(t, `SELECT count(*) FROM conversation_members WHERE conversation_id = $1 AND role = 0 AND member_id IN ($2, $3)`, conv, a.ID, b.ID); n != 2 {
		t.Fatalf("%d conversation members, want 2", n)
	}
	if n := e.count(t, `SELECT count(*) FROM conversations WHERE id = $1 AND kind = 1 AND member_lo = least($2::bigint, $3::bigint) AND member_hi = greatest($2::bigint, $3::bigint)`, conv, a.ID, b.ID); n != 1 {
		t.Fatal("accept did not open the pair's direct conversation")
	}

	// Contacts now: a second request is refused, either way round.
	_, err = a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID})
	wantCode(t, err, connect.CodeAlreadyExists)
	_, err = bg.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: a.ID})
	wantCode(t, err, connect.CodeAlreadyExists)

	// The remark is the caller's alone.
	rem, err := a.Contacts.SetContactRemark(ctx, &v1.SetContactRemarkRequest{MemberId: b.ID, Remark: " Bobby "})
	if err != nil {
		t.Fatalf("SetContactRemark: %v", err)
	}
	if rem.GetContact().GetRemark() != "Bobby" || rem.GetContact().GetMember().GetId() != b.ID || rem.GetContact().GetConversationId() != conv {
		t.Fatalf("SetContactRemark returned %v", rem.GetContact())
	}
	la, err := a.Contacts.ListContacts(ctx, &v1.ListContactsRequest{})
	if err != nil {
		t.Fatalf("ListContacts: %v", err)
	}
	if len(la.GetContacts()) != 1 || la.GetContacts()[0].GetRemark() != "Bobby" || la.GetContacts()[0].GetMember().GetNickname() != "Bob" ||
		la.GetContacts()[0].GetConversationId() != conv || la.GetNextPageToken() != "" {
		t.Fatalf("a's contacts = %v", la)
	}
	lb, err := bg.Contacts.ListContacts(ctx, &v1.ListContactsRequest{})
	if err != nil {
		t.Fatalf("ListContacts: %v", err)
	}
	if len(lb.GetContacts()) != 1 || lb.GetContacts()[0].GetRemark() != "" || lb.GetContacts()[0].GetMember().GetId() != a.ID {
		t.Fatalf("b's contacts = %v", lb)
	}

	// Removing drops both sides; the conversation and its members stay.
	if _, err := bg.Contacts.RemoveContact(ctx, &v1.RemoveContactRequest{MemberId: a.ID}); err != nil {
		t.Fatalf("RemoveContact: %v", err)
	}
	if n := ctPairContacts(t, e, a.ID, b.ID); n != 0 {
		t.Fatalf("%d contact rows after remove, want 0", n)
	}
	_, err = a.Contacts.RemoveContact(ctx, &v1.RemoveContactRequest{MemberId: b.ID})
	wantCode(t, err, connect.CodeNotFound)
	_, err = a.Contacts.SetContactRemark(ctx, &v1.SetContactRemarkRequest{MemberId: b.ID, Remark: "x"})
	wantCode(t, err, connect.CodeNotFound)

	// Befriending again finds the same conversation.
	conv2 := makeContacts(t, bg, a)
	if conv2 != conv {
		t.Fatalf("re-befriended into conversation %d, want %d", conv2, conv)
	}
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
	if _, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID}); err != nil {
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
	if n := e.count(t, `SELECT count(*) FROM friend_requests WHERE $1 IN (from_member_id, to_member_id)`, c.ID); n != 0 {
		t.Fatalf("%d requests involving c, want 0", n)
	}

	// After a decline, asking again is allowed.
	in, err := b.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{Direction: v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_INCOMING})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: in.GetRequests()[0].GetId()}); err != nil {
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
	got := res.GetRequest()
	if got.GetId() != first.GetRequest().GetId() || got.GetStatus() != v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_ACCEPTED ||
		got.GetFromMemberId() != b.ID || got.GetOther().GetId() != b.ID {
		t.Fatalf("reverse request returned %v, want b's request accepted", got)
	}
	if n := ctPairContacts(t, e, a.ID, b.ID); n != 2 {
		t.Fatalf("%d contact rows, want 2", n)
	}
	if n := e.count(t, `SELECT count(*) FROM friend_requests WHERE status = 1`); n != 0 {
		t.Fatalf("%d pending requests left, want 0", n)
	}
	ev := bev.nextWhere(func(ev *v1.Event) bool { return ev.GetFriendRequestAnswered() != nil })
	if ev.GetFriendRequestAnswered().GetId() != got.GetId() || ev.GetFriendRequestAnswered().GetOther().GetId() != a.ID {
		t.Fatalf("b got %v", ev)
	}
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

	var want []int64 // incoming request ids, oldest first
	for i := range 5 {
		o := e.register(t, fmt.Sprintf("sender %d", i))
		res, err := o.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: me.ID, Note: strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, res.GetRequest().GetId())
	}
	if _, err := me.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: want[1]}); err != nil {
		t.Fatal(err)
	}
	slices.Reverse(want)

	var got []*v1.FriendRequest
	token, pages := "", 0
	for {
		res, err := me.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{
			Direction: v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_INCOMING, PageSize: 2, PageToken: token,
		})
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		pages++
		got = append(got, res.GetRequests()...)
		if token = res.GetNextPageToken(); token == "" {
			break
		}
	}
	if pages != 3 {
		t.Fatalf("%d pages, want 3", pages)
	}
	var ids []int64
	for _, r := range got {
		ids = append(ids, r.GetId())
		if r.GetToMemberId() != me.ID || r.GetOther().GetId() != r.GetFromMemberId() {
			t.Fatalf("request %v: wrong sides", r)
		}
		wantStatus := v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_PENDING
		if r.GetId() == want[3] { // the second one sent, declined above
			wantStatus = v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_DECLINED
		}
		if r.GetStatus() != wantStatus {
			t.Fatalf("request %d status %v, want %v", r.GetId(), r.GetStatus(), wantStatus)
		}
	}
	if !slices.Equal(ids, want) {
		t.Fatalf("incoming ids %v, want %v (newest first)", ids, want)
	}

	out, err := me.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{Direction: v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_OUTGOING})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.GetRequests()) != 0 {
		t.Fatalf("outgoing = %v, want none", out.GetRequests())
	}
	_, err = me.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{
		Direction: v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_INCOMING, PageToken: "not-a-token",
	})
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
	if dec.GetRequest().GetStatus() != v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_DECLINED || dec.GetContact() != nil ||
		dec.GetRequest().GetRespondedAt() == nil || dec.GetRequest().GetOther().GetId() != a.ID {
		t.Fatalf("decline returned %v", dec)
	}
	for _, accept := range []bool{true, false} {
		_, err = b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: id, Accept: accept})
		wantCode(t, err, connect.CodeFailedPrecondition)
	}
	if n := ctPairContacts(t, e, a.ID, b.ID); n != 0 {
		t.Fatalf("%d contact rows after decline, want 0", n)
	}
	if n := e.count(t, `SELECT count(*) FROM conversations`); n != 0 {
		t.Fatalf("%d conversations after decline, want 0", n)
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

	sent, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID, Note: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	ev := bev.next()
	rcv := ev.GetFriendRequestReceived()
	if rcv.GetId() != sent.GetRequest().GetId() || rcv.GetOther().GetId() != a.ID || rcv.GetOther().GetNickname() != "Ann" ||
		rcv.GetNote() != "hello" || ev.GetAt() == nil {
		t.Fatalf("b got %v, want friend_request_received from a", ev)
	}

	if _, err := b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: rcv.GetId(), Accept: true}); err != nil {
		t.Fatal(err)
	}
	ans := aev.next().GetFriendRequestAnswered()
	if ans.GetId() != rcv.GetId() || ans.GetStatus() != v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_ACCEPTED || ans.GetOther().GetId() != b.ID {
		t.Fatalf("a got %v, want friend_request_answered (accepted)", ans)
	}
	if got := a2ev.next().GetFriendRequestAnswered(); got.GetId() != rcv.GetId() {
		t.Fatalf("a's second device got %v", got)
	}

	if _, err := a.Contacts.RemoveContact(ctx, &v1.RemoveContactRequest{MemberId: b.ID}); err != nil {
		t.Fatal(err)
	}
	if got := bev.next().GetContactRemoved(); got.GetMemberId() != a.ID {
		t.Fatalf("b got contact_removed %v, want member_id %d", got, a.ID)
	}
	if got := a2ev.next().GetContactRemoved(); got.GetMemberId() != b.ID {
		t.Fatalf("a's other device got contact_removed %v, want member_id %d", got, b.ID)
	}

	// Befriend again, then a blocks b: b must hear nothing of it. The next
	// event b sees must be c's request, sent after the block.
	sent, err = a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID})
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
	if _, err := c.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID}); err != nil {
		t.Fatal(err)
	}
	if ev := bev.next(); ev.GetFriendRequestReceived().GetFromMemberId() != c.ID {
		t.Fatalf("b's next event after the block is %v, want c's request", ev)
	}
	// The blocker's other device drops the contact.
	got := a2ev.nextWhere(func(ev *v1.Event) bool { return ev.GetContactRemoved() != nil })
	if got.GetContactRemoved().GetMemberId() != b.ID {
		t.Fatalf("a's other device got %v", got)
	}
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

	for _, m := range []*client{b, c, d} {
		if _, err := a.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: m.ID}); err != nil {
			t.Fatalf("block %d: %v", m.ID, err)
		}
	}
	// Blocking twice is fine.
	if _, err := a.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: b.ID}); err != nil {
		t.Fatalf("block twice: %v", err)
	}
	_, err = a.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: a.ID})
	wantInvalid(t, err, "member_id")
	_, err = a.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: 1 << 50})
	wantCode(t, err, connect.CodeNotFound)

	if n := ctPairContacts(t, e, a.ID, b.ID); n != 0 {
		t.Fatalf("%d contact rows after block, want 0", n)
	}
	for _, id := range []int64{fromC.GetRequest().GetId(), toD.GetRequest().GetId()} {
		if n := e.count(t, `SELECT count(*) FROM friend_requests WHERE id = $1 AND status = 3 AND responded_at IS NOT NULL`, id); n != 1 {
			t.Fatalf("request %d not declined by the block", id)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM blocks WHERE blocker_id = $1`, a.ID); n != 3 {
		t.Fatalf("%d blocks, want 3", n)
	}
	// The blocked members cannot befriend the blocker.
	for _, m := range []*client{b, c, d} {
		_, err := m.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: a.ID})
		wantCode(t, err, connect.CodePermissionDenied)
	}

	// ListBlocked pages by member id.
	var listed []int64
	token := ""
	for {
		res, err := a.Contacts.ListBlocked(ctx, &v1.ListBlockedRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.GetMembers() {
			if m.GetPhone() != "" {
				t.Fatalf("ListBlocked shows a phone: %v", m)
			}
			listed = append(listed, m.GetId())
		}
		if token = res.GetNextPageToken(); token == "" {
			break
		}
	}
	if want := []int64{b.ID, c.ID, d.ID}; !slices.Equal(listed, want) {
		t.Fatalf("ListBlocked = %v, want %v", listed, want)
	}

	if _, err := a.Contacts.UnblockMember(ctx, &v1.UnblockMemberRequest{MemberId: b.ID}); err != nil {
		t.Fatalf("unblock: %v", err)
	}
	_, err = a.Contacts.UnblockMember(ctx, &v1.UnblockMemberRequest{MemberId: b.ID})
	wantCode(t, err, connect.CodeNotFound)
	_, err = a.Contacts.UnblockMember(ctx, &v1.UnblockMemberRequest{MemberId: 1 << 50})
	wantCode(t, err, connect.CodeNotFound)
	// Unblocked, b may ask again (and the old contact is not restored).
	if n := ctPairContacts(t, e, a.ID, b.ID); n != 0 {
		t.Fatalf("unblock restored %d contact rows", n)
	}
	if _, err := b.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: a.ID}); err != nil {
		t.Fatalf("request after unblock: %v", err)
	}
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
		{"send id 0", "member_id", func() error {
			_, err := cc.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: 0})
			return err
		}},
		{"send id negative", "member_id", func() error {
			_, err := cc.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: -5})
			return err
		}},
		{"send note 257", "note", func() error {
			_, err := cc.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID, Note: strings.Repeat("é", 257)})
			return err
		}},
		{"respond id 0", "request_id", func() error {
			_, err := cc.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: 0, Accept: true})
			return err
		}},
		{"remark id -1", "member_id", func() error {
			_, err := cc.SetContactRemark(ctx, &v1.SetContactRemarkRequest{MemberId: -1})
			return err
		}},
		{"remark 33", "remark", func() error {
			_, err := cc.SetContactRemark(ctx, &v1.SetContactRemarkRequest{MemberId: b.ID, Remark: strings.Repeat("日", 33)})
			return err
		}},
		{"remove id 0", "member_id", func() error {
			_, err := cc.RemoveContact(ctx, &v1.RemoveContactRequest{})
			return err
		}},
		{"block id 0", "member_id", func() error {
			_, err := cc.BlockMember(ctx, &v1.BlockMemberRequest{})
			return err
		}},
		{"unblock id 0", "member_id", func() error {
			_, err := cc.UnblockMember(ctx, &v1.UnblockMemberRequest{MemberId: -1})
			return err
		}},
		{"contacts page_size", "page_size", func() error {
			_, err := cc.ListContacts(ctx, &v1.ListContactsRequest{PageSize: -1})
			return err
		}},
		{"contacts page_token", "page_token", func() error {
			_, err := cc.ListContacts(ctx, &v1.ListContactsRequest{PageToken: "@@"})
			return err
		}},
		{"blocked page_token", "page_token", func() error {
			_, err := cc.ListBlocked(ctx, &v1.ListBlockedRequest{PageToken: "AAAA"})
			return err
		}},
		{"requests page_size", "page_size", func() error {
			_, err := cc.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{
				Direction: v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_OUTGOING, PageSize: -1,
			})
			return err
		}},
	}
	before := ctSnapshot(t, e.Pool)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantInvalid(t, tc.call(), tc.field) })
	}
	if after := ctSnapshot(t, e.Pool); after != before {
		t.Fatalf("invalid calls changed the database:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// At the limits, in multi-byte characters, everything is accepted.
	if _, err := cc.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: b.ID, Note: strings.Repeat("é", 256)}); err != nil {
		t.Fatalf("256-character note: %v", err)
	}
	in, err := b.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{Direction: v1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_INCOMING})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: in.GetRequests()[0].GetId(), Accept: true}); err != nil {
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
	pending, err := a.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: x.ID})
	if err != nil {
		t.Fatal(err)
	}
	reqID := pending.GetRequest().GetId()

	refused := []connect.Code{connect.CodePermissionDenied, connect.CodeNotFound}
	cases := []struct {
		name string
		call func() error // returns nil only when the call was refused as wanted
	}{
		{"SendFriendRequest by blocked member", func() error {
			_, err := d.Contacts.SendFriendRequest(ctx, &v1.SendFriendRequestRequest{MemberId: a.ID, Note: "let me in"})
			return wantRefused(err, connect.CodePermissionDenied)
		}},
		{"RespondFriendRequest accept by requester", func() error {
			_, err := a.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: reqID, Accept: true})
			return wantRefused(err, refused...)
		}},
		{"RespondFriendRequest decline by requester", func() error {
			_, err := a.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: reqID})
			return wantRefused(err, refused...)
		}},
		{"RespondFriendRequest accept by stranger", func() error {
			_, err := stranger.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: reqID, Accept: true})
			return wantRefused(err, refused...)
		}},
		{"RespondFriendRequest accept by blocked member", func() error {
			_, err := d.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: reqID, Accept: true})
			return wantRefused(err, refused...)
		}},
		{"SetContactRemark by stranger on a", func() error {
			_, err := stranger.Contacts.SetContactRemark(ctx, &v1.SetContactRemarkRequest{MemberId: a.ID, Remark: "mine"})
			return wantRefused(err, refused...)
		}},
		{"SetContactRemark by blocked member on a", func() error {
			_, err := d.Contacts.SetContactRemark(ctx, &v1.SetContactRemarkRequest{MemberId: a.ID, Remark: "mine"})
			return wantRefused(err, refused...)
		}},
		{"RemoveContact by stranger of a", func() error {
			_, err := stranger.Contacts.RemoveContact(ctx, &v1.RemoveContactRequest{MemberId: a.ID})
			return wantRefused(err, refused...)
		}},
		{"RemoveContact by stranger of b", func() error {
			_, err := stranger.Contacts.RemoveContact(ctx, &v1.RemoveContactRequest{MemberId: b.ID})
			return wantRefused(err, refused...)
		}},
		{"RemoveContact by blocked member", func() error {
			_, err := d.Contacts.RemoveContact(ctx, &v1.RemoveContactRequest{MemberId: a.ID})
			return wantRefused(err, refused...)
		}},
		{"BlockMember of an unknown member", func() error {
			_, err := stranger.Contacts.BlockMember(ctx, &v1.BlockMemberRequest{MemberId: 1 << 50})
			return wantRefused(err, refused...)
		}},
		{"UnblockMember by the blocked member", func() error {
			_, err := d.Contacts.UnblockMember(ctx, &v1.UnblockMemberRequest{MemberId: a.ID})
			return wantRefused(err, refused...)
		}},
		{"UnblockMember by stranger", func() error {
			_, err := stranger.Contacts.UnblockMember(ctx, &v1.UnblockMemberRequest{MemberId: d.ID})
			return wantRefused(err, refused...)
		}},
		{"ListContacts by stranger", func() error {
			res, err := stranger.Contacts.ListContacts(ctx, &v1.ListContactsRequest{})
			if err != nil || len(res.GetContacts()) != 0 {
				return fmt.Errorf("got %v, %v; want no contacts", res, err)
			}
			return nil
		}},
		{"ListFriendRequests by stranger", func() error {
			for _, dir := range []v1.FriendRequestDirection{1, 2} {
				res, err := stranger.Contacts.ListFriendRequests(ctx, &v1.ListFriendRequestsRequest{Direction: dir})
				if err != nil || len(res.GetRequests()) != 0 {
					return fmt.Errorf("direction %v: got %v, %v; want no requests", dir, res, err)
				}
			}
			return nil
		}},
		{"ListBlocked by blocked member", func() error {
			res, err := d.Contacts.ListBlocked(ctx, &v1.ListBlockedRequest{})
			if err != nil || len(res.GetMembers()) != 0 {
				return fmt.Errorf("got %v, %v; want nobody", res, err)
			}
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := ctSnapshot(t, e.Pool)
			if err := tc.call(); err != nil {
				t.Fatal(err)
			}
			if after := ctSnapshot(t, e.Pool); after != before {
				t.Fatalf("refused call changed the database:\nbefore:\n%s\nafter:\n%s", before, after)
			}
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
// leave exactly one winner and rows that agree with it.
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
				_, err := b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: sent.GetRequest().GetId(), Accept: accept})
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
		wantStatus, wantRows := 3, 0
		if wins[0] {
			wantStatus, wantRows = 2, 2
		}
		if got := e.count(t, `SELECT status FROM friend_requests WHERE id = $1`, sent.GetRequest().GetId()); got != wantStatus {
			t.Fatalf("round %d: status %d, want %d", round, got, wantStatus)
		}
		if got := ctPairContacts(t, e, a.ID, b.ID); got != wantRows {
			t.Fatalf("round %d: %d contact rows, want %d", round, got, wantRows)
		}
		if got := e.count(t, `SELECT count(*) FROM conversation_members cm JOIN conversations c ON c.id = cm.conversation_id
			WHERE c.member_lo = least($1::bigint, $2::bigint) AND c.member_hi = greatest($1::bigint, $2::bigint)`, a.ID, b.ID); got != wantRows {
			t.Fatalf("round %d: %d conversation members, want %d", round, got, wantRows)
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
			if n := ctPairContacts(t, e, a.ID, b.ID); n != 2 {
				t.Fatalf("round %d: %d contact rows, want 2", round, n)
			}
			if n := e.count(t, `SELECT count(*) FROM friend_requests WHERE $1 IN (from_member_id, to_member_id) AND status <> 2`, a.ID); n != 0 {
				t.Fatalf("round %d: %d requests not accepted", round, n)
			}
		}
	})

	t.Run("accept both ways at once", func(t *testing.T) {
		for round := range 4 {
			a, b := e.register(t, fmt.Sprintf("aa%d", round)), e.register(t, fmt.Sprintf("ab%d", round))
			// Two pending requests opposite ways cannot be made through the
			// API (the second accepts the first); plant them to check that
			// answering both at once still yields one friendship.
			var ab, ba int64
			if err := e.Pool.QueryRow(ctx, `INSERT INTO friend_requests (from_member_id, to_member_id) VALUES ($1, $2) RETURNING id`, a.ID, b.ID).Scan(&ab); err != nil {
				t.Fatal(err)
			}
			if err := e.Pool.QueryRow(ctx, `INSERT INTO friend_requests (from_member_id, to_member_id) VALUES ($1, $2) RETURNING id`, b.ID, a.ID).Scan(&ba); err != nil {
				t.Fatal(err)
			}
			errs := make([]error, 2)
			var wg sync.WaitGroup
			wg.Go(func() {
				_, errs[0] = b.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: ab, Accept: true})
			})
			wg.Go(func() {
				_, errs[1] = a.Contacts.RespondFriendRequest(ctx, &v1.RespondFriendRequestRequest{RequestId: ba, Accept: true})
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
			if n := ctPairContacts(t, e, a.ID, b.ID); n != 2 {
				t.Fatalf("round %d: %d contact rows, want 2", round, n)
			}
			if n := e.count(t, `SELECT count(*) FROM friend_requests WHERE id IN ($1, $2) AND status = 2`, ab, ba); n != 2 {
				t.Fatalf("round %d: %d of the two requests accepted, want both settled", round, n)
			}
		}
	})
}

// TestListContactsPaging10k pages through 10,000 contacts, inserted in bulk
// with SQL, and finds each exactly once, in order.
func TestListContactsPaging10k(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	owner := e.register(t, "popular")
	const total = 10000
	_, err := e.Pool.Exec(ctx, `
		WITH m AS (
			INSERT INTO members (phone, password_hash, nickname)
			SELECT '+1999' || lpad(g::text, 7, '0'), 'x', 'bulk ' || g FROM generate_series(1, $2::int) g
			RETURNING id
		), c AS (
			INSERT INTO conversations (kind, member_lo, member_hi)
			SELECT 1, least($1::bigint, id), greatest($1::bigint, id) FROM m
			RETURNING id, member_lo, member_hi
		)
		INSERT INTO contacts (owner_id, member_id, remark, conversation_id)
		SELECT $1, CASE WHEN member_lo = $1 THEN member_hi ELSE member_lo END, 'r', id FROM c`, owner.ID, total)
	if err != nil {
		t.Fatalf("bulk insert: %v", err)
	}

	var got []int64
	token, pages := "", 0
	for {
		res, err := owner.Contacts.ListContacts(ctx, &v1.ListContactsRequest{PageSize: 100, PageToken: token})
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		pages++
		if len(res.GetContacts()) != 100 {
			t.Fatalf("page %d has %d contacts, want 100", pages, len(res.GetContacts()))
		}
		for _, c := range res.GetContacts() {
			if c.GetRemark() != "r" || c.GetConversationId() == 0 || !strings.HasPrefix(c.GetMember().GetNickname(), "bulk ") {
				t.Fatalf("contact %v", c)
			}
			got = append(got, c.GetMember().GetId())
		}
		if token = res.GetNextPageToken(); token == "" {
			break
		}
		if pages > total/100 {
			t.Fatal("paging does not end")
		}
	}
	if pages != total/100 {
		t.Fatalf("%d pages, want %d", pages, total/100)
	}
	var want []int64
	rows, err := e.Pool.Query(ctx, `SELECT member_id FROM contacts WHERE owner_id = $1 ORDER BY member_id`, owner.ID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(want) != total || !slices.Equal(got, want) {
		t.Fatalf("paged %d ids, want the %d in the table in order (duplicates or gaps)", len(got), len(want))
	}
}

// TestContactServiceJSON speaks to ContactService the way curl does: JSON
// over HTTP/1.1, ids as strings, enums by name, errors as Connect JSON.
func TestContactServiceJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "a"), e.register(t, "b")
	post := func(c *client, method, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.URL+"/karlmalone.v1.ContactService/"+method, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+c.Token)
		res, err := e.H1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		raw, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&out); err != nil {
			t.Fatalf("%s: decode %q: %v", method, raw, err)
		}
		return res.StatusCode, out
	}

	status, out := post(a, "SendFriendRequest", fmt.Sprintf(`{"memberId":"%d","note":"hi"}`, b.ID))
	if status != http.StatusOK {
		t.Fatalf("SendFriendRequest: %d %v", status, out)
	}
	r, _ := out["request"].(map[string]any)
	if r["toMemberId"] != strconv.FormatInt(b.ID, 10) || r["fromMemberId"] != strconv.FormatInt(a.ID, 10) ||
		r["status"] != "FRIEND_REQUEST_STATUS_PENDING" {
		t.Fatalf("request = %v", r)
	}
	status, out = post(b, "RespondFriendRequest", fmt.Sprintf(`{"requestId":%q,"accept":true}`, r["id"]))
	if status != http.StatusOK || out["contact"].(map[string]any)["conversationId"] == nil {
		t.Fatalf("RespondFriendRequest: %d %v", status, out)
	}
	status, out = post(a, "ListContacts", `{"pageSize":10}`)
	contacts, _ := out["contacts"].([]any)
	if status != http.StatusOK || len(contacts) != 1 {
		t.Fatalf("ListContacts: %d %v", status, out)
	}

	for _, bad := range []struct{ method, body, code, field string }{
		{"SendFriendRequest", `{"memberId":"0"}`, "invalid_argument", "member_id"},
		{"SendFriendRequest", `{"memberId":"abc"}`, "invalid_argument", ""},
		{"ListFriendRequests", `{}`, "invalid_argument", "direction"},
		{"ListFriendRequests", `{"direction":"FRIEND_REQUEST_DIRECTION_SIDEWAYS"}`, "invalid_argument", ""},
		{"UnblockMember", fmt.Sprintf(`{"memberId":"%d"}`, b.ID), "not_found", ""},
	} {
		status, out := post(a, bad.method, bad.body)
		msg, _ := out["message"].(string)
		if status/100 != 4 || out["code"] != bad.code || !strings.Contains(msg, bad.field) {
			t.Fatalf("%s %s: %d %v, want %s naming %q", bad.method, bad.body, status, out, bad.code, bad.field)
		}
	}
}
