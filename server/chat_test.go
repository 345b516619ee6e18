package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// Fixtures go through the public API (ContactService, GroupService), so chat
// is tested against the rows those services really write.

// chatGroup creates an invite-only group of owner and members (each made the
// owner's contact first, as CreateGroup requires).
func chatGroup(t testing.TB, e *env, owner *client, members ...*client) *v1.Group {
	t.Helper()
	ids := make([]int64, len(members))
	for i, m := range members {
		if e.count(t, `SELECT count(*) FROM contacts WHERE owner_id = $1 AND member_id = $2`, owner.ID, m.ID) == 0 {
			makeContacts(t, owner, m)
		}
		ids[i] = m.ID
	}
	res, err := owner.Groups.CreateGroup(context.Background(), &v1.CreateGroupRequest{Name: "chat", MemberIds: ids})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	return res.GetGroup()
}

// chatOpenGroup creates an open group that members join themselves (no
// friendships needed, so it scales to large groups).
func chatOpenGroup(t testing.TB, owner *client, members ...*client) *v1.Group {
	t.Helper()
	res, err := owner.Groups.CreateGroup(context.Background(), &v1.CreateGroupRequest{Name: "open", JoinPolicy: v1.JoinPolicy_JOIN_POLICY_OPEN})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	for _, m := range members {
		if _, err := m.Groups.JoinGroup(context.Background(), &v1.JoinGroupRequest{GroupId: res.GetGroup().GetId()}); err != nil {
			t.Fatalf("JoinGroup: %v", err)
		}
	}
	return res.GetGroup()
}

func peerText(peerID int64, clientMsgID, text string) *v1.SendMessageRequest {
	return &v1.SendMessageRequest{
		Target: &v1.SendMessageRequest_PeerId{PeerId: peerID}, ClientMsgId: clientMsgID,
		Content: &v1.SendMessageRequest_Text{Text: text},
	}
}

func groupText(groupID int64, clientMsgID, text string) *v1.SendMessageRequest {
	return &v1.SendMessageRequest{
		Target: &v1.SendMessageRequest_GroupId{GroupId: groupID}, ClientMsgId: clientMsgID,
		Content: &v1.SendMessageRequest_Text{Text: text},
	}
}

// chatSend sends and fails the test on error.
func chatSend(t testing.TB, c *client, req *v1.SendMessageRequest) *v1.Message {
	t.Helper()
	res, err := c.Chat.SendMessage(context.Background(), req)
	if err != nil {
		t.Fatalf("SendMessage %q: %v", req.GetClientMsgId(), err)
	}
	return res.GetMessage()
}

// chatHistory is every message of a conversation as c sees it, paged through
// with after_seq.
func chatHistory(t testing.TB, c *client, convID int64) []*v1.Message {
	t.Helper()
	var out []*v1.Message
	after := int64(0)
	for {
		res, err := c.Chat.ListMessages(context.Background(), &v1.ListMessagesRequest{
			ConversationId: convID, Position: &v1.ListMessagesRequest_AfterSeq{AfterSeq: after}, Limit: 200,
		})
		if err != nil {
			t.Fatalf("ListMessages after %d: %v", after, err)
		}
		out = append(out, res.GetMessages()...)
		if !res.GetHasMore() {
			return out
		}
		after = res.GetMessages()[len(res.GetMessages())-1].GetSeq()
	}
}

func seqsOf(msgs []*v1.Message) []int64 {
	out := make([]int64, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetSeq()
	}
	return out
}

func seqRange(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func equalSeqs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// isMessage matches new-message events.
func isMessage(ev *v1.Event) bool { return ev.GetMessage() != nil }

func TestChatSendAndListMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)

	m1 := chatSend(t, a, peerText(b.ID, "m1", "hello"))
	if m1.GetConversationId() != conv || m1.GetSeq() != 1 || m1.GetSenderId() != a.ID ||
		m1.GetClientMsgId() != "m1" || m1.GetText() != "hello" || m1.GetSentAt() == nil || m1.GetRecalledAt() != nil {
		t.Fatalf("first message: %v", m1)
	}
	// Either side writes into the same conversation and sequence.
	m2 := chatSend(t, b, peerText(a.ID, "m1", "hi ann")) // client ids are per sender
	if m2.GetConversationId() != conv || m2.GetSeq() != 2 {
		t.Fatalf("reply: %v", m2)
	}
	for i := 3; i <= 7; i++ {
		chatSend(t, a, peerText(b.ID, fmt.Sprint("m", i), fmt.Sprint("text ", i)))
	}

	list := func(req *v1.ListMessagesRequest) *v1.ListMessagesResponse {
		t.Helper()
		req.ConversationId = conv
		res, err := b.Chat.ListMessages(t.Context(), req)
		if err != nil {
			t.Fatalf("ListMessages: %v", err)
		}
		return res
	}
	for _, tc := range []struct {
		name    string
		req     *v1.ListMessagesRequest
		want    []int64
		hasMore bool
	}{
		{"newest", &v1.ListMessagesRequest{}, seqRange(1, 7), false},
		{"newest limited", &v1.ListMessagesRequest{Limit: 3}, seqRange(5, 7), true},
		{"after", &v1.ListMessagesRequest{Position: &v1.ListMessagesRequest_AfterSeq{AfterSeq: 2}, Limit: 3}, seqRange(3, 5), true},
		{"after to the end", &v1.ListMessagesRequest{Position: &v1.ListMessagesRequest_AfterSeq{AfterSeq: 4}, Limit: 3}, seqRange(5, 7), false},
		{"after the last", &v1.ListMessagesRequest{Position: &v1.ListMessagesRequest_AfterSeq{AfterSeq: 7}}, nil, false},
		{"before", &v1.ListMessagesRequest{Position: &v1.ListMessagesRequest_BeforeSeq{BeforeSeq: 6}, Limit: 2}, seqRange(4, 5), true},
		{"before to the start", &v1.ListMessagesRequest{Position: &v1.ListMessagesRequest_BeforeSeq{BeforeSeq: 3}, Limit: 5}, seqRange(1, 2), false},
		{"limit clamped", &v1.ListMessagesRequest{Limit: 100000}, seqRange(1, 7), false},
	} {
		res := list(tc.req)
		if got := seqsOf(res.GetMessages()); !equalSeqs(got, tc.want) || res.GetHasMore() != tc.hasMore {
			t.Errorf("%s: seqs %v has_more %v, want %v %v", tc.name, got, res.GetHasMore(), tc.want, tc.hasMore)
		}
	}
	got := list(&v1.ListMessagesRequest{Position: &v1.ListMessagesRequest_AfterSeq{AfterSeq: 0}, Limit: 2}).GetMessages()
	if got[0].GetText() != "hello" || got[1].GetText() != "hi ann" || got[1].GetSenderId() != b.ID {
		t.Errorf("history content: %v", got)
	}

	// A group conversation has its own sequence.
	c := e.register(t, "cat")
	g := chatGroup(t, e, a, b, c)
	gm := chatSend(t, c, groupText(g.GetId(), "g1", "hello group"))
	if gm.GetConversationId() != g.GetConversationId() || gm.GetSeq() != 1 {
		t.Fatalf("group message: %v", gm)
	}
	if n := e.count(t, `SELECT count(*) FROM messages`); n != 8 {
		t.Fatalf("%d messages stored, want 8", n)
	}
}

func TestChatIdempotentRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	chatSend(t, a, peerText(b.ID, "before", "first"))

	// 20 concurrent sends of one message (a client retrying on timeouts),
	// each racing the others for the conversation's seq.
	const n = 20
	var wg sync.WaitGroup
	seqs := make([]int64, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			res, err := a.Chat.SendMessage(t.Context(), peerText(b.ID, "retry-me", "once"))
			errs[i] = err
			seqs[i] = res.GetMessage().GetSeq()
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("send %d: %v", i, errs[i])
		}
		if seqs[i] != 2 {
			t.Fatalf("send %d got seq %d, want 2 (every retry answers with the one stored message)", i, seqs[i])
		}
	}
	if rows := e.count(t, `SELECT count(*) FROM messages WHERE sender_id = $1 AND client_msg_id = 'retry-me'`, a.ID); rows != 1 {
		t.Fatalf("%d rows for one client_msg_id, want 1", rows)
	}
	// No gap: the next message takes seq 3, and the counter agrees.
	if m := chatSend(t, b, peerText(a.ID, "after", "next")); m.GetSeq() != 3 {
		t.Fatalf("next message seq %d, want 3", m.GetSeq())
	}
	if last := e.count(t, `SELECT last_seq FROM conversations WHERE id = $1`, conv); last != 3 {
		t.Fatalf("last_seq %d, want 3", last)
	}
	// A later retry, sequential this time, answers the same.
	if m := chatSend(t, a, peerText(b.ID, "retry-me", "once")); m.GetSeq() != 2 || m.GetText() != "once" {
		t.Fatalf("late retry: %v", m)
	}
	// Reusing the key for another conversation is a client bug, not a retry.
	c := e.register(t, "cat")
	makeContacts(t, a, c)
	_, err := a.Chat.SendMessage(t.Context(), peerText(c.ID, "retry-me", "once"))
	wantCode(t, err, connect.CodeAlreadyExists)
	if rows := e.count(t, `SELECT count(*) FROM messages`); rows != 3 {
		t.Fatalf("%d messages stored, want 3", rows)
	}
}

// Refused sends store nothing and push nothing: the recipient's next event is
// the next allowed message.
func TestChatForbidden(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann, bob, eve, ex := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "eve"), e.register(t, "ex")
	blocker, friend := e.register(t, "blocker"), e.register(t, "friend")
	annBob := makeContacts(t, ann, bob)
	makeContacts(t, friend, bob)
	makeContacts(t, blocker, bob)
	exBob := makeContacts(t, ex, bob)
	chatSend(t, ex, peerText(bob.ID, "old", "from before"))
	if _, err := bob.Contacts.RemoveContact(t.Context(), &v1.RemoveContactRequest{MemberId: ex.ID}); err != nil {
		t.Fatalf("RemoveContact: %v", err)
	}
	if _, err := bob.Contacts.BlockMember(t.Context(), &v1.BlockMemberRequest{MemberId: blocker.ID}); err != nil {
		t.Fatalf("BlockMember: %v", err)
	}
	closed := chatGroup(t, e, ann, bob, eve) // invite-only
	if _, err := ann.Groups.RemoveGroupMember(t.Context(), &v1.RemoveGroupMemberRequest{GroupId: closed.GetId(), MemberId: eve.ID}); err != nil {
		t.Fatalf("RemoveGroupMember: %v", err)
	}
	open := chatOpenGroup(t, ann, bob, eve)
	if _, err := eve.Groups.LeaveGroup(t.Context(), &v1.LeaveGroupRequest{GroupId: open.GetId()}); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}

	bobEvents := e.connect(t, bob)
	messagesBefore := e.count(t, `SELECT count(*) FROM messages`)
	seqsBefore := e.count(t, `SELECT sum(last_seq) FROM conversations`)

	for _, tc := range []struct {
		name string
		from *client
		req  *v1.SendMessageRequest
		want connect.Code
	}{
		{"stranger", eve, peerText(bob.ID, "x1", "hi"), connect.CodePermissionDenied},
		{"former contact", ex, peerText(bob.ID, "x2", "hi"), connect.CodePermissionDenied},
		{"blocked sender", blocker, peerText(bob.ID, "x3", "hi"), connect.CodePermissionDenied},
		{"blocker", bob, peerText(blocker.ID, "x4", "hi"), connect.CodePermissionDenied},
		{"unknown member", ann, peerText(1<<40, "x5", "hi"), connect.CodeNotFound},
		{"removed from invite-only group", eve, groupText(closed.GetId(), "x6", "hi"), connect.CodeNotFound},
		{"left open group", eve, groupText(open.GetId(), "x7", "hi"), connect.CodePermissionDenied},
		{"unknown group", ann, groupText(1<<40, "x8", "hi"), connect.CodeNotFound},
	} {
		_, err := tc.from.Chat.SendMessage(t.Context(), tc.req)
		if got := connect.CodeOf(err); got != tc.want {
			t.Errorf("%s: got %v (%v), want %v", tc.name, got, err, tc.want)
		}
	}

	// Reads and the other calls on a conversation the caller is not in.
	_, err := eve.Chat.ListMessages(t.Context(), &v1.ListMessagesRequest{ConversationId: annBob})
	wantCode(t, err, connect.CodeNotFound)
	_, err = eve.Chat.ListMessages(t.Context(), &v1.ListMessagesRequest{ConversationId: closed.GetConversationId()})
	wantCode(t, err, connect.CodeNotFound)
	_, err = eve.Chat.MarkRead(t.Context(), &v1.MarkReadRequest{ConversationId: annBob, Seq: 0})
	wantCode(t, err, connect.CodeNotFound)
	_, err = eve.Chat.SendTyping(t.Context(), &v1.SendTypingRequest{ConversationId: annBob})
	wantCode(t, err, connect.CodeNotFound)
	_, err = eve.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: exBob, Seq: 1})
	wantCode(t, err, connect.CodeNotFound)
	// The former contact keeps the history but may not type into it.
	if h := chatHistory(t, ex, exBob); len(h) != 1 || h[0].GetText() != "from before" {
		t.Errorf("former contact's history: %v", h)
	}
	_, err = ex.Chat.SendTyping(t.Context(), &v1.SendTypingRequest{ConversationId: exBob})
	wantCode(t, err, connect.CodePermissionDenied)

	if n := e.count(t, `SELECT count(*) FROM messages`); n != messagesBefore {
		t.Fatalf("%d messages after refused sends, want %d", n, messagesBefore)
	}
	if n := e.count(t, `SELECT sum(last_seq) FROM conversations`); n != seqsBefore {
		t.Fatalf("refused sends moved a seq counter: %d, want %d", n, seqsBefore)
	}
	ok := chatSend(t, friend, peerText(bob.ID, "allowed", "this one"))
	if got := bobEvents.next(); got.GetMessage().GetClientMsgId() != "allowed" || got.GetMessage().GetSenderId() != friend.ID {
		t.Fatalf("bob's next event is %v, want the allowed message %v", got, ok)
	}
}

func TestChatInvalidInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	var att int64
	if err := e.Pool.QueryRow(t.Context(), `INSERT INTO attachments (uploader_id, sha256, size, content_type) VALUES ($1, '\x00', 1, 'image/png') RETURNING id`, a.ID).Scan(&att); err != nil {
		t.Fatal(err)
	}
	withAttachment := func(a *v1.Attachment) *v1.SendMessageRequest {
		return &v1.SendMessageRequest{Target: &v1.SendMessageRequest_PeerId{PeerId: b.ID}, ClientMsgId: "att", Content: &v1.SendMessageRequest_Attachment{Attachment: a}}
	}
	for _, tc := range []struct {
		name  string
		req   *v1.SendMessageRequest
		field string
	}{
		{"4,001 runes", peerText(b.ID, "big", strings.Repeat("é", 4001)), "text"},
		{"empty text", peerText(b.ID, "e", ""), "text"},
		{"blank text", peerText(b.ID, "e", " \n\t"), "text"},
		{"NUL in text", peerText(b.ID, "e", "a\x00b"), "text"},
		{"no client_msg_id", peerText(b.ID, "", "hi"), "client_msg_id"},
		{"long client_msg_id", peerText(b.ID, strings.Repeat("k", 65), "hi"), "client_msg_id"},
		{"no target", &v1.SendMessageRequest{ClientMsgId: "t", Content: &v1.SendMessageRequest_Text{Text: "hi"}}, "target"},
		{"bad peer_id", peerText(-1, "t", "hi"), "peer_id"},
		{"bad group_id", groupText(0, "t", "hi"), "group_id"},
		{"no content", &v1.SendMessageRequest{Target: &v1.SendMessageRequest_PeerId{PeerId: b.ID}, ClientMsgId: "c"}, "content"},
		{"attachment kind unspecified", withAttachment(&v1.Attachment{Id: att}), "attachment.kind"},
		{"attachment kind unknown", withAttachment(&v1.Attachment{Id: att, Kind: 9}), "attachment.kind"},
		{"attachment id missing", withAttachment(&v1.Attachment{Kind: v1.AttachmentKind_ATTACHMENT_KIND_IMAGE}), "attachment.id"},
		{"long caption", withAttachment(&v1.Attachment{Id: att, Kind: v1.AttachmentKind_ATTACHMENT_KIND_IMAGE, Caption: strings.Repeat("c", 1025)}), "attachment.caption"},
	} {
		_, err := a.Chat.SendMessage(t.Context(), tc.req)
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: got %v, want invalid_argument naming %s", tc.name, err, tc.field)
		}
	}
	// The largest text goes through, its length counted in characters.
	if m := chatSend(t, a, peerText(b.ID, "max", strings.Repeat("é", 4000))); len([]rune(m.GetText())) != 4000 {
		t.Fatalf("4,000-rune text came back with %d runes", len([]rune(m.GetText())))
	}

	for _, tc := range []struct {
		name  string
		call  func() error
		field string
	}{
		{"negative limit", func() error {
			_, err := a.Chat.ListMessages(t.Context(), &v1.ListMessagesRequest{ConversationId: conv, Limit: -1})
			return err
		}, "limit"},
		{"before_seq 0", func() error {
			_, err := a.Chat.ListMessages(t.Context(), &v1.ListMessagesRequest{ConversationId: conv, Position: &v1.ListMessagesRequest_BeforeSeq{}})
			return err
		}, "before_seq"},
		{"no conversation", func() error {
			_, err := a.Chat.ListMessages(t.Context(), &v1.ListMessagesRequest{})
			return err
		}, "conversation_id"},
		{"read past the end", func() error {
			_, err := a.Chat.MarkRead(t.Context(), &v1.MarkReadRequest{ConversationId: conv, Seq: 2})
			return err
		}, "seq"},
		{"negative read seq", func() error {
			_, err := a.Chat.MarkRead(t.Context(), &v1.MarkReadRequest{ConversationId: conv, Seq: -1})
			return err
		}, "seq"},
		{"recall seq 0", func() error {
			_, err := a.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: conv})
			return err
		}, "seq"},
		{"bad page token", func() error {
			_, err := a.Chat.ListConversations(t.Context(), &v1.ListConversationsRequest{PageToken: "nope"})
			return err
		}, "page_token"},
	} {
		err := tc.call()
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: got %v, want invalid_argument naming %s", tc.name, err, tc.field)
		}
	}

	// Malformed JSON, as curl would send it: wrong types, unknown oneof
	// members, a body over the request limit.
	const send = "/karlmalone.v1.ChatService/SendMessage"
	for _, body := range []string{
		`{"peerId": "bob", "clientMsgId": "j", "text": "hi"}`,
		`{"peerId": "1", "groupId": "2", "clientMsgId": "j", "text": "hi"}`,
		`{"peerId": "1", "clientMsgId": 7, "text": "hi"}`,
		`{"peerId": "1", "clientMsgId": "j", "text": ["hi"]}`,
		`[1, 2, 3]`,
		`{"peerId": "1", "clientMsgId": "j", "text": "` + strings.Repeat("x", 2<<20) + `"}`,
	} {
		status, out, raw := e.postJSON(t, send, a.Token, body)
		if code := out["code"]; status/100 != 4 || (code != "invalid_argument" && code != "resource_exhausted") {
			t.Errorf("%.60s…: status %d %.200s", body, status, raw)
		}
	}
	// A well-formed JSON request works, and names fields in lowerCamelCase.
	status, out, raw := e.postJSON(t, send, a.Token, fmt.Sprintf(`{"peerId": "%d", "clientMsgId": "json-1", "text": "from curl"}`, b.ID))
	if status != http.StatusOK {
		t.Fatalf("JSON send: %d %s", status, raw)
	}
	if msg, _ := out["message"].(map[string]any); msg["clientMsgId"] != "json-1" || msg["conversationId"] != fmt.Sprint(conv) {
		t.Fatalf("JSON send answered %s", raw)
	}
	if n := e.count(t, `SELECT count(*) FROM messages`); n != 2 {
		t.Fatalf("%d messages stored, want 2 (the 4,000-rune one and the JSON one)", n)
	}
}

func TestChatAttachments(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	upload := func(owner *client) int64 {
		var id int64
		if err := e.Pool.QueryRow(t.Context(), `INSERT INTO attachments (uploader_id, sha256, size, content_type) VALUES ($1, '\x01', 1234, 'image/jpeg') RETURNING id`, owner.ID).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	mine, theirs := upload(a), upload(b)
	req := func(id int64) *v1.SendMessageRequest {
		return &v1.SendMessageRequest{
			Target: &v1.SendMessageRequest_PeerId{PeerId: b.ID}, ClientMsgId: fmt.Sprint("att-", id),
			Content: &v1.SendMessageRequest_Attachment{Attachment: &v1.Attachment{
				Id: id, Kind: v1.AttachmentKind_ATTACHMENT_KIND_IMAGE, Caption: "look",
				ContentType: "text/lies", Size: 1, // the server fills these from the upload
			}},
		}
	}
	m := chatSend(t, a, req(mine))
	att := m.GetAttachment()
	if att.GetId() != mine || att.GetKind() != v1.AttachmentKind_ATTACHMENT_KIND_IMAGE || att.GetCaption() != "look" ||
		att.GetContentType() != "image/jpeg" || att.GetSize() != 1234 {
		t.Fatalf("attachment message: %v", m)
	}
	if h := chatHistory(t, b, conv); len(h) != 1 || h[0].GetAttachment().GetContentType() != "image/jpeg" || h[0].GetAttachment().GetSize() != 1234 {
		t.Fatalf("history: %v", h)
	}
	// Someone else's upload, or none: not found, nothing stored.
	_, err := a.Chat.SendMessage(t.Context(), req(theirs))
	wantCode(t, err, connect.CodeNotFound)
	_, err = a.Chat.SendMessage(t.Context(), req(1<<40))
	wantCode(t, err, connect.CodeNotFound)
	if n := e.count(t, `SELECT count(*) FROM messages`); n != 1 {
		t.Fatalf("%d messages, want 1", n)
	}
}

func TestChatListConversations(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "cat")
	ab := makeContacts(t, a, b)
	ac := makeContacts(t, a, c)
	g := chatGroup(t, e, a, b, c)

	chatSend(t, b, peerText(a.ID, "1", "one"))
	chatSend(t, b, peerText(a.ID, "2", "two"))
	chatSend(t, c, groupText(g.GetId(), "3", "three"))
	chatSend(t, a, peerText(b.ID, "4", "four")) // ab is now the most recent
	// ac has no message: it sorts by when it opened, behind the others.

	var got []*v1.Conversation
	token := ""
	for range 4 {
		res, err := a.Chat.ListConversations(t.Context(), &v1.ListConversationsRequest{PageSize: 1, PageToken: token})
		if err != nil {
			t.Fatalf("ListConversations: %v", err)
		}
		got = append(got, res.GetConversations()...)
		if token = res.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(got) != 3 || got[0].GetId() != ab || got[1].GetId() != g.GetConversationId() || got[2].GetId() != ac {
		t.Fatalf("conversations in order %v", got)
	}
	first := got[0]
	if first.GetKind() != v1.ConversationKind_CONVERSATION_KIND_DIRECT || first.GetPeer().GetId() != b.ID ||
		first.GetPeer().GetNickname() != "bob" || first.GetPeer().GetPhone() != "" {
		t.Errorf("direct conversation: %v", first)
	}
	// a's own last message moved a's cursor: b's two messages were read by replying.
	if first.GetLastSeq() != 3 || first.GetReadSeq() != 3 || first.GetUnreadCount() != 0 ||
		first.GetLastMessage().GetText() != "four" || first.GetUpdatedAt() == nil {
		t.Errorf("direct conversation counters: %v", first)
	}
	grp := got[1]
	if grp.GetKind() != v1.ConversationKind_CONVERSATION_KIND_GROUP || grp.GetGroup().GetId() != g.GetId() ||
		grp.GetGroup().GetName() != "chat" || grp.GetGroup().GetConversationId() != g.GetConversationId() ||
		grp.GetUnreadCount() != 1 || grp.GetLastMessage().GetText() != "three" {
		t.Errorf("group conversation: %v", grp)
	}
	if got[2].GetLastMessage() != nil || got[2].GetLastSeq() != 0 || got[2].GetPeer().GetId() != c.ID {
		t.Errorf("empty conversation: %v", got[2])
	}
	// b sees the same conversation from its side, with its own cursor.
	res, err := b.Chat.ListConversations(t.Context(), &v1.ListConversationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range res.GetConversations() {
		if cv.GetId() == ab && (cv.GetPeer().GetId() != a.ID || cv.GetReadSeq() != 2 || cv.GetUnreadCount() != 1) {
			t.Errorf("b's view of ab: %v", cv)
		}
	}
}

func TestChatMarkReadAndUnread(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	b2 := e.login(t, b.Phone, b.Password) // bob's second device
	aEvents, b2Events := e.connect(t, a), e.connect(t, b2)
	for i := range 3 {
		chatSend(t, a, peerText(b.ID, fmt.Sprint(i), "hi"))
	}
	unread := func(c *client) (readSeq, unread int64) {
		t.Helper()
		res, err := c.Chat.ListConversations(t.Context(), &v1.ListConversationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetConversations()[0].GetReadSeq(), res.GetConversations()[0].GetUnreadCount()
	}
	if r, u := unread(b); r != 0 || u != 3 {
		t.Fatalf("bob: read %d unread %d, want 0 3", r, u)
	}
	if r, u := unread(a); r != 3 || u != 0 {
		t.Fatalf("ann (the sender): read %d unread %d, want 3 0", r, u)
	}

	res, err := b.Chat.MarkRead(t.Context(), &v1.MarkReadRequest{ConversationId: conv, Seq: 2})
	if err != nil || res.GetReadSeq() != 2 {
		t.Fatalf("MarkRead 2: %v %v", res, err)
	}
	if r, u := unread(b); r != 2 || u != 1 {
		t.Fatalf("bob after MarkRead: read %d unread %d, want 2 1", r, u)
	}
	// The receipt reaches the other member and bob's other device.
	for _, ev := range []*events{aEvents, b2Events} {
		rr := ev.nextWhere(func(ev *v1.Event) bool { return ev.GetReadReceipt() != nil }).GetReadReceipt()
		if rr.GetConversationId() != conv || rr.GetMemberId() != b.ID || rr.GetReadSeq() != 2 {
			t.Fatalf("read receipt %v", rr)
		}
	}
	// Backwards or in place: the cursor stays and nothing is pushed.
	for _, seq := range []int64{1, 2, 0} {
		res, err := b.Chat.MarkRead(t.Context(), &v1.MarkReadRequest{ConversationId: conv, Seq: seq})
		if err != nil || res.GetReadSeq() != 2 {
			t.Fatalf("MarkRead %d: %v %v, want read_seq 2", seq, res, err)
		}
	}
	chatSend(t, a, peerText(b.ID, "marker", "next"))
	if ev := aEvents.next(); ev.GetMessage().GetClientMsgId() != "marker" {
		t.Fatalf("ann's next event %v, want the marker message (no receipt for a cursor that did not move)", ev)
	}
	if ev := b2Events.next(); ev.GetMessage().GetClientMsgId() != "marker" {
		t.Fatalf("bob's next event %v, want the marker message", ev)
	}
	if _, err := b.Chat.MarkRead(t.Context(), &v1.MarkReadRequest{ConversationId: conv, Seq: 4}); err != nil {
		t.Fatal(err)
	}
	if r, u := unread(b); r != 4 || u != 0 {
		t.Fatalf("bob all read: read %d unread %d", r, u)
	}
}

func TestChatRecall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	bEvents := e.connect(t, b)
	m := chatSend(t, a, peerText(b.ID, "oops", "sent by mistake"))
	bEvents.nextWhere(isMessage)

	_, err := b.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: conv, Seq: m.GetSeq()})
	wantCode(t, err, connect.CodePermissionDenied) // not the sender

	res, err := a.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: conv, Seq: m.GetSeq()})
	if err != nil {
		t.Fatalf("RecallMessage: %v", err)
	}
	if res.GetMessage().GetRecalledAt() == nil || res.GetMessage().GetContent() != nil {
		t.Fatalf("recalled message: %v", res.GetMessage())
	}
	rc := bEvents.next().GetMessageRecalled()
	if rc.GetConversationId() != conv || rc.GetSeq() != m.GetSeq() || rc.GetSenderId() != a.ID || rc.GetRecalledAt() == nil {
		t.Fatalf("recall event %v", rc)
	}
	h := chatHistory(t, b, conv)
	if len(h) != 1 || h[0].GetRecalledAt() == nil || h[0].GetContent() != nil || h[0].GetClientMsgId() != "oops" {
		t.Fatalf("history after recall: %v", h)
	}
	if n := e.count(t, `SELECT count(*) FROM messages WHERE body IS NULL AND recalled_at IS NOT NULL`); n != 1 {
		t.Fatalf("the stored content was not cleared")
	}
	// Again: a retry succeeds and pushes nothing more.
	if _, err := a.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: conv, Seq: m.GetSeq()}); err != nil {
		t.Fatalf("second recall: %v", err)
	}
	_, err = a.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: conv, Seq: 99})
	wantCode(t, err, connect.CodeNotFound)
	chatSend(t, a, peerText(b.ID, "marker", "next"))
	if ev := bEvents.next(); ev.GetMessage().GetClientMsgId() != "marker" {
		t.Fatalf("bob's next event %v, want the marker message", ev)
	}

	// Past the window (a window of a microsecond has passed by the time the
	// send has answered): refused, content kept.
	e2 := newEnv(t, withConfig(func(c *server.Config) { c.RecallWindow = time.Microsecond }))
	c, d := e2.register(t, "cat"), e2.register(t, "dan")
	conv2 := makeContacts(t, c, d)
	m2 := chatSend(t, c, peerText(d.ID, "late", "too late to take back"))
	_, err = c.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: conv2, Seq: m2.GetSeq()})
	wantCode(t, err, connect.CodeFailedPrecondition)
	if h := chatHistory(t, d, conv2); h[0].GetText() != "too late to take back" || h[0].GetRecalledAt() != nil {
		t.Fatalf("message after a refused recall: %v", h[0])
	}
}

func TestChatTyping(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "cat")
	g := chatGroup(t, e, a, b, c)
	a2 := e.login(t, a.Phone, a.Password)
	aEvents, a2Events, bEvents, cEvents := e.connect(t, a), e.connect(t, a2), e.connect(t, b), e.connect(t, c)

	if _, err := a.Chat.SendTyping(t.Context(), &v1.SendTypingRequest{ConversationId: g.GetConversationId()}); err != nil {
		t.Fatalf("SendTyping: %v", err)
	}
	for _, ev := range []*events{bEvents, cEvents} {
		ty := ev.next().GetTyping()
		if ty.GetConversationId() != g.GetConversationId() || ty.GetMemberId() != a.ID {
			t.Fatalf("typing event %v", ty)
		}
	}
	chatSend(t, b, groupText(g.GetId(), "marker", "next"))
	for _, ev := range []*events{aEvents, a2Events} {
		if got := ev.next(); got.GetMessage().GetClientMsgId() != "marker" {
			t.Fatalf("the typist's next event is %v, want the marker message (typing goes to others only)", got)
		}
	}
	if n := e.count(t, `SELECT count(*) FROM messages`); n != 1 {
		t.Fatalf("typing stored something: %d messages", n)
	}
}

// TestSendRateLimit: SendMessage is throttled per member, across devices,
// with resource_exhausted; other members keep their own budget.
func TestSendRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) {
		c.SendPerMember = server.RateLimit{Every: time.Hour, Burst: 3}
	}))
	a, b := e.register(t, "a"), e.register(t, "b")
	makeContacts(t, a, b)
	aLaptop := e.login(t, a.Phone, a.Password)
	for i, dev := range []*client{a, aLaptop, a} {
		chatSend(t, dev, peerText(b.ID, fmt.Sprint("ok", i), "hi"))
	}
	_, err := aLaptop.Chat.SendMessage(t.Context(), peerText(b.ID, "one-too-many", "hi"))
	wantCode(t, err, connect.CodeResourceExhausted)
	if got := e.count(t, `SELECT count(*) FROM messages WHERE sender_id = $1`, a.ID); got != 3 {
		t.Fatalf("%d messages stored, want 3", got)
	}
	chatSend(t, b, peerText(a.ID, "b-1", "hello back"))
}
