package server_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

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

// sentText is a stored text message as the API shows it (with anyTime).
func sentText(convID, seq, senderID int64, clientMsgID, text string) *v1.Message {
	return &v1.Message{
		ConversationId: convID, Seq: seq, SenderId: senderID, ClientMsgId: clientMsgID,
		Content: &v1.Message_Text{Text: text}, SentAt: &timestamppb.Timestamp{},
	}
}

// clientMsgIDs lists the messages' client ids, in order.
func clientMsgIDs(msgs []*v1.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetClientMsgId()
	}
	return out
}

// isMessage matches new-message events.
func isMessage(ev *v1.Event) bool { return ev.GetMessage() != nil }

func TestChatSendAndListMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	var sent []*v1.Message

	step(t, "either side writes into the pair's one sequence", func(t *testing.T) {
		m1 := chatSend(t, a, peerText(b.ID, "m1", "hello"))
		wantProto(t, "first message", sentText(conv, 1, a.ID, "m1", "hello"), m1, anyTime)
		m2 := chatSend(t, b, peerText(a.ID, "m1", "hi ann")) // client ids are per sender
		wantProto(t, "reply", sentText(conv, 2, b.ID, "m1", "hi ann"), m2, anyTime)
		sent = append(sent, m1, m2)
		for i := 3; i <= 7; i++ {
			sent = append(sent, chatSend(t, a, peerText(b.ID, fmt.Sprint("m", i), fmt.Sprint("text ", i))))
		}
	})

	step(t, "ListMessages reads by seq either way", func(t *testing.T) {
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
			tc.req.ConversationId = conv
			res, err := b.Chat.ListMessages(t.Context(), tc.req)
			if err != nil {
				t.Fatalf("%s: ListMessages: %v", tc.name, err)
			}
			if got := seqsOf(res.GetMessages()); !slices.Equal(got, tc.want) || res.GetHasMore() != tc.hasMore {
				t.Errorf("%s: seqs %v has_more %v, want %v %v", tc.name, got, res.GetHasMore(), tc.want, tc.hasMore)
			}
		}
		// History is what the sends answered, once each.
		wantProto(t, "history", sent, chatHistory(t, b, conv))
	})

	step(t, "a group conversation has its own sequence", func(t *testing.T) {
		c := e.register(t, "cat")
		g := newGroup(t, a, b, c)
		gm := chatSend(t, c, groupText(g.GetId(), "g1", "hello group"))
		wantProto(t, "group message", sentText(g.GetConversationId(), 1, c.ID, "g1", "hello group"), gm, anyTime)
		wantProto(t, "group history", []*v1.Message{gm}, chatHistory(t, a, g.GetConversationId()))
		wantProto(t, "the pair's history", sent, chatHistory(t, a, conv))
	})
}

func TestChatIdempotentRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	before := chatSend(t, a, peerText(b.ID, "before", "first"))

	// 20 concurrent sends of one message (a client retrying on timeouts),
	// each racing the others for the conversation's seq.
	const n = 20
	var wg sync.WaitGroup
	answers := make([]*v1.Message, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			res, err := a.Chat.SendMessage(t.Context(), peerText(b.ID, "retry-me", "once"))
			answers[i], errs[i] = res.GetMessage(), err
		})
	}
	close(start)
	wg.Wait()
	retried := sentText(conv, 2, a.ID, "retry-me", "once")
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("send %d: %v", i, errs[i])
		}
		// Every retry answers with the one stored message.
		wantProto(t, fmt.Sprintf("send %d", i), retried, answers[i], anyTime)
		wantProto(t, fmt.Sprintf("send %d and send 0", i), answers[0], answers[i])
	}
	// No gap: the next message takes seq 3, and the conversation agrees.
	after := chatSend(t, b, peerText(a.ID, "after", "next"))
	wantProto(t, "next message", sentText(conv, 3, b.ID, "after", "next"), after, anyTime)
	wantProto(t, "history", []*v1.Message{before, answers[0], after}, chatHistory(t, a, conv))
	res, err := a.Chat.ListConversations(t.Context(), &v1.ListConversationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if last := res.GetConversations()[0].GetLastSeq(); last != 3 {
		t.Fatalf("last_seq %d, want 3", last)
	}
	// A later retry, sequential this time, answers the same.
	wantProto(t, "late retry", answers[0], chatSend(t, a, peerText(b.ID, "retry-me", "once")))
	// Reusing the key for another conversation is a client bug, not a retry.
	c := e.register(t, "cat")
	ac := makeContacts(t, a, c)
	_, err = a.Chat.SendMessage(t.Context(), peerText(c.ID, "retry-me", "once"))
	wantCode(t, err, connect.CodeAlreadyExists)
	if h := chatHistory(t, a, ac); len(h) != 0 {
		t.Fatalf("the refused reuse stored %v", h)
	}
	wantProto(t, "history after the reuse", []*v1.Message{before, answers[0], after}, chatHistory(t, a, conv))
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
	closed := newGroup(t, ann, bob, eve) // invite-only
	if _, err := ann.Groups.RemoveGroupMember(t.Context(), &v1.RemoveGroupMemberRequest{GroupId: closed.GetId(), MemberId: eve.ID}); err != nil {
		t.Fatalf("RemoveGroupMember: %v", err)
	}
	open := openGroup(t, ann, bob, eve)
	if _, err := eve.Groups.LeaveGroup(t.Context(), &v1.LeaveGroupRequest{GroupId: open.GetId()}); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}

	bobEvents := e.connect(t, bob)
	before := e.dbSnapshot(t, "messages", "conversations", "conversation_members")

	step(t, "sends outside a conversation are refused", func(t *testing.T) {
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
	})

	step(t, "reads and other calls outside a conversation are refused", func(t *testing.T) {
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
	})

	step(t, "a former contact keeps the history but may not type into it", func(t *testing.T) {
		wantProto(t, "former contact's history", []*v1.Message{sentText(exBob, 1, ex.ID, "old", "from before")}, chatHistory(t, ex, exBob), anyTime)
		_, err := ex.Chat.SendTyping(t.Context(), &v1.SendTypingRequest{ConversationId: exBob})
		wantCode(t, err, connect.CodePermissionDenied)
	})

	step(t, "refused calls stored and pushed nothing", func(t *testing.T) {
		before.wantUnchanged(t, "refused calls")
		ok := chatSend(t, friend, peerText(bob.ID, "allowed", "this one"))
		wantProto(t, "bob's next event", ok, bobEvents.next().GetMessage())
	})
}

func TestChatInvalidInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	att := attID(t, attUpload(t, e, a, "image/png", attBytes(pngHeader, 100)))
	withAttachment := func(a *v1.Attachment) *v1.SendMessageRequest {
		return &v1.SendMessageRequest{Target: &v1.SendMessageRequest_PeerId{PeerId: b.ID}, ClientMsgId: "att", Content: &v1.SendMessageRequest_Attachment{Attachment: a}}
	}

	step(t, "SendMessage names the bad field", func(t *testing.T) {
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
			t.Run(tc.name, func(t *testing.T) {
				_, err := a.Chat.SendMessage(t.Context(), tc.req)
				wantInvalid(t, err, tc.field+":")
			})
		}
	})

	step(t, "the largest text goes through, counted in characters", func(t *testing.T) {
		if m := chatSend(t, a, peerText(b.ID, "max", strings.Repeat("é", 4000))); len([]rune(m.GetText())) != 4000 {
			t.Fatalf("4,000-rune text came back with %d runes", len([]rune(m.GetText())))
		}
	})

	step(t, "the other calls name the bad field", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			call  func() error
			field string
		}{
			{"negative limit", call(a.Chat.ListMessages, &v1.ListMessagesRequest{ConversationId: conv, Limit: -1}), "limit"},
			{"before_seq 0", call(a.Chat.ListMessages, &v1.ListMessagesRequest{ConversationId: conv, Position: &v1.ListMessagesRequest_BeforeSeq{}}), "before_seq"},
			{"no conversation", call(a.Chat.ListMessages, &v1.ListMessagesRequest{}), "conversation_id"},
			{"read past the end", call(a.Chat.MarkRead, &v1.MarkReadRequest{ConversationId: conv, Seq: 2}), "seq"},
			{"negative read seq", call(a.Chat.MarkRead, &v1.MarkReadRequest{ConversationId: conv, Seq: -1}), "seq"},
			{"recall seq 0", call(a.Chat.RecallMessage, &v1.RecallMessageRequest{ConversationId: conv}), "seq"},
			{"bad page token", call(a.Chat.ListConversations, &v1.ListConversationsRequest{PageToken: "nope"}), "page_token"},
		} {
			t.Run(tc.name, func(t *testing.T) { wantInvalid(t, tc.call(), tc.field+":") })
		}
	})

	const send = "/karlmalone.v1.ChatService/SendMessage"
	step(t, "malformed JSON is refused", func(t *testing.T) {
		// As curl would send it: wrong types, unknown oneof members, a body
		// over the request limit.
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
	})

	step(t, "well-formed JSON works, in lowerCamelCase", func(t *testing.T) {
		status, out, raw := e.postJSON(t, send, a.Token, fmt.Sprintf(`{"peerId": "%d", "clientMsgId": "json-1", "text": "from curl"}`, b.ID))
		if status != http.StatusOK {
			t.Fatalf("JSON send: %d %s", status, raw)
		}
		msg, _ := out["message"].(map[string]any)
		wantFields(t, "JSON send's message", map[string]any{"clientMsgId": "json-1", "conversationId": fmt.Sprint(conv)}, msg)
	})

	step(t, "only the valid messages were stored", func(t *testing.T) {
		wantProto(t, "stored messages", []string{"max", "json-1"}, clientMsgIDs(chatHistory(t, a, conv)))
	})
}

func TestChatAttachments(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	jpeg := attBytes("\xFF\xD8\xFF", 1234) // sniffs as image/jpeg
	mine, theirs := attID(t, attUpload(t, e, a, "image/jpeg", jpeg)), attID(t, attUpload(t, e, b, "image/jpeg", jpeg))
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
	wantProto(t, "attachment message", &v1.Message{
		ConversationId: conv, Seq: 1, SenderId: a.ID, ClientMsgId: fmt.Sprint("att-", mine), SentAt: set,
		Content: &v1.Message_Attachment{Attachment: &v1.Attachment{
			Id: mine, Kind: v1.AttachmentKind_ATTACHMENT_KIND_IMAGE, Caption: "look", ContentType: "image/jpeg", Size: 1234,
		}},
	}, m, anyTime)
	// Someone else's upload, or none: not found, nothing stored.
	_, err := a.Chat.SendMessage(t.Context(), req(theirs))
	wantCode(t, err, connect.CodeNotFound)
	_, err = a.Chat.SendMessage(t.Context(), req(1<<40))
	wantCode(t, err, connect.CodeNotFound)
	wantProto(t, "the recipient's history", []*v1.Message{m}, chatHistory(t, b, conv))
}

func TestChatListConversations(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "cat")
	ab := makeContacts(t, a, b)
	ac := makeContacts(t, a, c)
	g := newGroup(t, a, b, c)

	chatSend(t, b, peerText(a.ID, "1", "one"))
	chatSend(t, b, peerText(a.ID, "2", "two"))
	three := chatSend(t, c, groupText(g.GetId(), "3", "three"))
	four := chatSend(t, a, peerText(b.ID, "4", "four")) // ab is now the most recent
	// ac has no message: it sorts by when it opened, behind the others.

	peer := func(c *client) *v1.Conversation_Peer { return &v1.Conversation_Peer{Peer: c.public()} }
	var got []*v1.Conversation
	for _, page := range pages(t, func(token string) (*v1.ListConversationsResponse, error) {
		return a.Chat.ListConversations(t.Context(), &v1.ListConversationsRequest{PageSize: 1, PageToken: token})
	}) {
		got = append(got, page.GetConversations()...)
	}
	wantProto(t, "a's conversations, most recent first", []*v1.Conversation{
		// a's own last message moved a's cursor: b's two messages were read by replying.
		{Id: ab, Kind: v1.ConversationKind_CONVERSATION_KIND_DIRECT, With: peer(b),
			LastMessage: four, LastSeq: 3, ReadSeq: 3, UnreadCount: 0, UpdatedAt: set},
		{Id: g.GetConversationId(), Kind: v1.ConversationKind_CONVERSATION_KIND_GROUP, With: &v1.Conversation_Group{Group: g},
			LastMessage: three, LastSeq: 1, ReadSeq: 0, UnreadCount: 1, UpdatedAt: set},
		{Id: ac, Kind: v1.ConversationKind_CONVERSATION_KIND_DIRECT, With: peer(c), UpdatedAt: set},
	}, got, anyTime)

	// b sees the same conversation from its side, with its own cursor.
	res, err := b.Chat.ListConversations(t.Context(), &v1.ListConversationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wantProto(t, "b's view of ab", &v1.Conversation{
		Id: ab, Kind: v1.ConversationKind_CONVERSATION_KIND_DIRECT, With: peer(a),
		LastMessage: four, LastSeq: 3, ReadSeq: 2, UnreadCount: 1, UpdatedAt: set,
	}, res.GetConversations()[0], anyTime)
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
	type cursor struct{ read, unread int64 }
	cursorOf := func(t *testing.T, c *client) cursor {
		t.Helper()
		res, err := c.Chat.ListConversations(t.Context(), &v1.ListConversationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return cursor{res.GetConversations()[0].GetReadSeq(), res.GetConversations()[0].GetUnreadCount()}
	}

	step(t, "unread counts what the member has not read", func(t *testing.T) {
		if got := cursorOf(t, b); got != (cursor{0, 3}) {
			t.Fatalf("bob: %+v, want read 0 unread 3", got)
		}
		if got := cursorOf(t, a); got != (cursor{3, 0}) {
			t.Fatalf("ann (the sender): %+v, want read 3 unread 0", got)
		}
	})

	step(t, "MarkRead moves the cursor and tells the other devices", func(t *testing.T) {
		res, err := b.Chat.MarkRead(t.Context(), &v1.MarkReadRequest{ConversationId: conv, Seq: 2})
		if err != nil || res.GetReadSeq() != 2 {
			t.Fatalf("MarkRead 2: %v %v", res, err)
		}
		if got := cursorOf(t, b); got != (cursor{2, 1}) {
			t.Fatalf("bob after MarkRead: %+v, want read 2 unread 1", got)
		}
		// The receipt reaches the other member and bob's other device.
		for _, ev := range []*events{aEvents, b2Events} {
			rr := ev.nextWhere(func(ev *v1.Event) bool { return ev.GetReadReceipt() != nil }).GetReadReceipt()
			wantProto(t, "read receipt", &v1.ReadReceipt{ConversationId: conv, MemberId: b.ID, ReadSeq: 2}, rr)
		}
	})

	step(t, "a cursor never moves back, and staying pushes nothing", func(t *testing.T) {
		for _, seq := range []int64{1, 2, 0} {
			res, err := b.Chat.MarkRead(t.Context(), &v1.MarkReadRequest{ConversationId: conv, Seq: seq})
			if err != nil || res.GetReadSeq() != 2 {
				t.Fatalf("MarkRead %d: %v %v, want read_seq 2", seq, res, err)
			}
		}
		marker := chatSend(t, a, peerText(b.ID, "marker", "next"))
		// No receipt for a cursor that did not move: the next events are the marker.
		wantProto(t, "ann's next event", marker, aEvents.next().GetMessage())
		wantProto(t, "bob's next event", marker, b2Events.next().GetMessage())
	})

	step(t, "reading everything leaves nothing unread", func(t *testing.T) {
		if _, err := b.Chat.MarkRead(t.Context(), &v1.MarkReadRequest{ConversationId: conv, Seq: 4}); err != nil {
			t.Fatal(err)
		}
		if got := cursorOf(t, b); got != (cursor{4, 0}) {
			t.Fatalf("bob all read: %+v", got)
		}
	})
}

func TestChatRecall(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	bEvents := e.connect(t, b)
	m := chatSend(t, a, peerText(b.ID, "oops", "sent by mistake"))
	bEvents.nextWhere(isMessage)
	// What a recalled message shows: who sent it when, and no content.
	recalled := &v1.Message{
		ConversationId: conv, Seq: m.GetSeq(), SenderId: a.ID, ClientMsgId: "oops", SentAt: m.GetSentAt(), RecalledAt: set,
	}

	step(t, "only the sender recalls", func(t *testing.T) {
		_, err := b.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: conv, Seq: m.GetSeq()})
		wantCode(t, err, connect.CodePermissionDenied)
	})

	step(t, "a recall clears the content everywhere and is pushed", func(t *testing.T) {
		res, err := a.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: conv, Seq: m.GetSeq()})
		if err != nil {
			t.Fatalf("RecallMessage: %v", err)
		}
		wantProto(t, "recalled message", recalled, res.GetMessage(), anyTime)
		wantProto(t, "recall event", &v1.MessageRecalled{
			ConversationId: conv, Seq: m.GetSeq(), SenderId: a.ID, RecalledAt: set,
		}, bEvents.next().GetMessageRecalled(), anyTime)
		wantProto(t, "history after recall", []*v1.Message{recalled}, chatHistory(t, b, conv), anyTime)
		// The content is gone from the database too, not only from answers.
		if n := len(e.dbRows(t, "messages", "body IS NULL AND recalled_at IS NOT NULL")); n != 1 {
			t.Fatalf("the stored content was not cleared")
		}
	})

	step(t, "a retried recall succeeds and pushes nothing more", func(t *testing.T) {
		if _, err := a.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: conv, Seq: m.GetSeq()}); err != nil {
			t.Fatalf("second recall: %v", err)
		}
		_, err := a.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: conv, Seq: 99})
		wantCode(t, err, connect.CodeNotFound)
		marker := chatSend(t, a, peerText(b.ID, "marker", "next"))
		wantProto(t, "bob's next event", marker, bEvents.next().GetMessage())
	})

	step(t, "past the window a recall is refused and the content kept", func(t *testing.T) {
		// A window of a microsecond has passed by the time the send has answered.
		e2 := newEnv(t, withConfig(func(c *server.Config) { c.RecallWindow = time.Microsecond }))
		c, d := e2.register(t, "cat"), e2.register(t, "dan")
		conv2 := makeContacts(t, c, d)
		m2 := chatSend(t, c, peerText(d.ID, "late", "too late to take back"))
		_, err := c.Chat.RecallMessage(t.Context(), &v1.RecallMessageRequest{ConversationId: conv2, Seq: m2.GetSeq()})
		wantCode(t, err, connect.CodeFailedPrecondition)
		wantProto(t, "history after a refused recall", []*v1.Message{m2}, chatHistory(t, d, conv2))
	})
}

func TestChatTyping(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "cat")
	g := newGroup(t, a, b, c)
	a2 := e.login(t, a.Phone, a.Password)
	aEvents, a2Events, bEvents, cEvents := e.connect(t, a), e.connect(t, a2), e.connect(t, b), e.connect(t, c)

	if _, err := a.Chat.SendTyping(t.Context(), &v1.SendTypingRequest{ConversationId: g.GetConversationId()}); err != nil {
		t.Fatalf("SendTyping: %v", err)
	}
	for _, ev := range []*events{bEvents, cEvents} {
		wantProto(t, "typing event", &v1.Typing{ConversationId: g.GetConversationId(), MemberId: a.ID}, ev.next().GetTyping())
	}
	marker := chatSend(t, b, groupText(g.GetId(), "marker", "next"))
	for _, ev := range []*events{aEvents, a2Events} {
		// Typing goes to others only: the typist's next event is the marker.
		wantProto(t, "the typist's next event", marker, ev.next().GetMessage())
	}
	wantProto(t, "history (typing stores nothing)", []*v1.Message{marker}, chatHistory(t, a, g.GetConversationId()))
}

// TestSendRateLimit: SendMessage is throttled per member, across devices,
// with resource_exhausted; other members keep their own budget.
func TestSendRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) {
		c.SendPerMember = server.RateLimit{Every: time.Hour, Burst: 3}
	}))
	a, b := e.register(t, "a"), e.register(t, "b")
	conv := makeContacts(t, a, b)
	aLaptop := e.login(t, a.Phone, a.Password)
	for i, dev := range []*client{a, aLaptop, a} {
		chatSend(t, dev, peerText(b.ID, fmt.Sprint("ok", i), "hi"))
	}
	_, err := aLaptop.Chat.SendMessage(t.Context(), peerText(b.ID, "one-too-many", "hi"))
	wantCode(t, err, connect.CodeResourceExhausted)
	chatSend(t, b, peerText(a.ID, "b-1", "hello back"))
	wantProto(t, "stored messages", []string{"ok0", "ok1", "ok2", "b-1"}, clientMsgIDs(chatHistory(t, b, conv)))
}
