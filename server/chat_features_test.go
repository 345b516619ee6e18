package server_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// The message features of docs/CHAT-FEATURES.md, through the public API:
// Connect clients, raw JSON, and push sockets of every device concerned (the
// actor's other devices included).

// replyText is a text message to a peer or a group that quotes replyTo.
func replyText(req *v1.SendMessageRequest, replyTo int64) *v1.SendMessageRequest {
	req.ReplyToSeq = replyTo
	return req
}

// history reads a conversation's newest messages as c sees them.
func history(t testing.TB, c *client, convID int64) []*v1.Message {
	t.Helper()
	res, err := c.Chat.ListMessages(context.Background(), &v1.ListMessagesRequest{ConversationId: convID, Limit: 200})
	if err != nil {
		t.Fatalf("ListMessages %d: %v", convID, err)
	}
	return res.GetMessages()
}

// messageAt is the message with seq in msgs (nil if none).
func messageAt(msgs []*v1.Message, seq int64) *v1.Message {
	for _, m := range msgs {
		if m.GetSeq() == seq {
			return m
		}
	}
	return nil
}

func TestChatReplies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, stranger := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "sam")
	a2 := e.login(t, a.Phone, a.Password) // ann's second device
	conv := makeContacts(t, a, b)
	other := makeContacts(t, a, stranger)
	long := strings.Repeat("é", 150)
	chatSend(t, a, peerText(b.ID, "m1", "hello bob"))
	chatSend(t, a, peerText(b.ID, "m2", long))
	for i := range 3 {
		chatSend(t, a, peerText(stranger.ID, fmt.Sprint("o", i), "elsewhere")) // seqs 1..3 of another conversation
	}
	aEv, a2Ev := e.connect(t, a), e.connect(t, a2)

	step(t, "a reply carries the quoted message's preview, pushed to every device", func(t *testing.T) {
		got := chatSend(t, b, replyText(peerText(a.ID, "r1", "hi!"), 1))
		want := sentText(conv, 3, b.ID, "r1", "hi!")
		want.ReplyTo = &v1.ReplyPreview{Seq: 1, SenderId: a.ID, Text: "hello bob"}
		wantProto(t, "reply", want, got, anyTime)
		for _, ev := range []*events{aEv, a2Ev} {
			wantProto(t, "pushed reply", want, ev.nextWhere(isMessage).GetMessage(), anyTime)
		}
		wantProto(t, "listed reply", want, messageAt(history(t, a, conv), 3), anyTime)
	})

	step(t, "the preview is the first 100 characters", func(t *testing.T) {
		got := chatSend(t, b, replyText(peerText(a.ID, "r2", "so long"), 2))
		if txt := got.GetReplyTo().GetText(); txt != strings.Repeat("é", 100) {
			t.Fatalf("preview %q (%d runes)", txt, len([]rune(txt)))
		}
	})

	step(t, "a recalled quote becomes unavailable in history", func(t *testing.T) {
		if _, err := a.Chat.RecallMessage(context.Background(), &v1.RecallMessageRequest{ConversationId: conv, Seq: 1}); err != nil {
			t.Fatal(err)
		}
		wantProto(t, "quote after recall", &v1.ReplyPreview{Seq: 1, Unavailable: true}, messageAt(history(t, b, conv), 3).GetReplyTo())
	})

	step(t, "what may not be quoted", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			c    *client
			req  *v1.SendMessageRequest
			code connect.Code
		}{
			{"a recalled message", b, replyText(peerText(a.ID, "x1", "re"), 1), connect.CodeFailedPrecondition},
			{"a seq not yet sent", b, replyText(peerText(a.ID, "x2", "re"), 99), connect.CodeNotFound},
			// Seq 5 exists only in ann's other conversation.
			{"another conversation's message", b, replyText(peerText(a.ID, "x3", "re"), 5), connect.CodeNotFound},
			{"from outside the conversation", stranger, replyText(peerText(b.ID, "x4", "re"), 2), connect.CodePermissionDenied},
		} {
			_, err := tc.c.Chat.SendMessage(context.Background(), tc.req)
			wantCode(t, err, tc.code)
		}
		_, err := b.Chat.SendMessage(context.Background(), replyText(peerText(a.ID, "x5", "re"), -1))
		wantInvalid(t, err, "reply_to_seq")
		if n := len(history(t, a, other)); n != 3 {
			t.Fatalf("other conversation has %d messages", n)
		}
	})

	step(t, "raw JSON", func(t *testing.T) {
		status, body, raw := e.postJSON(t, "/karlmalone.v1.ChatService/SendMessage", b.Token,
			fmt.Sprintf(`{"peerId":"%d","clientMsgId":"j1","text":"json reply","replyToSeq":"2"}`, a.ID))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, raw)
		}
		msg := body["message"].(map[string]any)
		wantFields(t, "json reply preview", map[string]any{"seq": "2", "senderId": fmt.Sprint(a.ID)}, msg["replyTo"].(map[string]any))
	})
}

func TestChatForward(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c, d := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "cid"), e.register(t, "dan")
	a2 := e.login(t, a.Phone, a.Password)
	ab := makeContacts(t, a, b)
	g := newGroup(t, a, c) // ann and cid; bob and dan are not in it
	up := attUpload(t, e, b, "image/png", attBytes(pngHeader, 512))
	chatSend(t, b, peerText(a.ID, "t1", "pass it on"))
	attSend(t, b, a, up.ID) // seq 2
	if res, _ := attGet(t, e, c.Token, up.ID, nil); res.StatusCode != http.StatusNotFound {
		t.Fatalf("cid downloads bob's attachment before any forward: %s", res.Status)
	}
	cEv, a2Ev := e.connect(t, c), e.connect(t, a2)
	fwd := func(cl *client, seq int64, key string) (*v1.ForwardMessageResponse, error) {
		return cl.Chat.ForwardMessage(context.Background(), &v1.ForwardMessageRequest{
			ConversationId: ab, Seq: seq, ClientMsgId: key, Target: &v1.ForwardMessageRequest_GroupId{GroupId: g.GetId()},
		})
	}

	step(t, "a text forward is a new message marked forwarded, pushed to the group and ann's other device", func(t *testing.T) {
		res, err := fwd(a, 1, "f1")
		if err != nil {
			t.Fatal(err)
		}
		want := sentText(g.GetConversationId(), 1, a.ID, "f1", "pass it on")
		want.Forwarded = true
		wantProto(t, "forward", want, res.GetMessage(), anyTime)
		for _, ev := range []*events{cEv, a2Ev} {
			wantProto(t, "pushed forward", want, ev.nextWhere(isMessage).GetMessage(), anyTime)
		}
		again, err := fwd(a, 1, "f1") // a retry: the same message, no new seq
		if err != nil {
			t.Fatal(err)
		}
		wantProto(t, "retried forward", want, again.GetMessage(), anyTime)
	})

	step(t, "an attachment is shared, not copied: the group may download it", func(t *testing.T) {
		res, err := fwd(a, 2, "f2")
		if err != nil {
			t.Fatal(err)
		}
		att := res.GetMessage().GetAttachment()
		if att.GetId() != attID(t, up) || !res.GetMessage().GetForwarded() || att.GetContentType() != "image/png" || att.GetSize() != 512 {
			t.Fatalf("forwarded attachment %v", res.GetMessage())
		}
		if got, _ := attGet(t, e, c.Token, up.ID, nil); got.StatusCode != http.StatusOK {
			t.Fatalf("cid downloads the forwarded attachment: %s", got.Status)
		}
		if n := attRows(t, e); n != 1 {
			t.Fatalf("%d attachment rows after the forward, want 1", n)
		}
	})

	step(t, "who may forward what, and where", func(t *testing.T) {
		_, err := fwd(d, 1, "d1") // dan cannot read ann and bob's conversation
		wantCode(t, err, connect.CodeNotFound)
		_, err = fwd(b, 1, "b1") // bob can read it, but is not in the group
		wantCode(t, err, connect.CodeNotFound)
		_, err = a.Chat.ForwardMessage(context.Background(), &v1.ForwardMessageRequest{
			ConversationId: ab, Seq: 1, ClientMsgId: "d2", Target: &v1.ForwardMessageRequest_PeerId{PeerId: d.ID},
		}) // ann and dan are not contacts
		wantCode(t, err, connect.CodePermissionDenied)
		if _, err := b.Chat.RecallMessage(context.Background(), &v1.RecallMessageRequest{ConversationId: ab, Seq: 1}); err != nil {
			t.Fatal(err)
		}
		_, err = fwd(a, 1, "f3")
		wantCode(t, err, connect.CodeFailedPrecondition)
		_, err = a.Chat.ForwardMessage(context.Background(), &v1.ForwardMessageRequest{ConversationId: ab, Seq: 2, ClientMsgId: "f4"})
		wantInvalid(t, err, "target")
	})

	step(t, "raw JSON", func(t *testing.T) {
		status, body, raw := e.postJSON(t, "/karlmalone.v1.ChatService/ForwardMessage", a.Token,
			fmt.Sprintf(`{"conversationId":"%d","seq":"2","groupId":"%d","clientMsgId":"j1"}`, ab, g.GetId()))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, raw)
		}
		wantFields(t, "json forward", map[string]any{"forwarded": true, "senderId": fmt.Sprint(a.ID)}, body["message"].(map[string]any))
	})
}

func TestChatEdits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "cid")
	a2 := e.login(t, a.Phone, a.Password)
	g := newGroup(t, a, b, c)
	conv := g.GetConversationId()
	chatSend(t, a, groupText(g.GetId(), "m1", "helo"))
	chatSend(t, b, replyText(groupText(g.GetId(), "m2", "typo!"), 1))
	up := attUpload(t, e, a, "image/png", attBytes(pngHeader, 64))
	if _, err := a.Chat.SendMessage(context.Background(), &v1.SendMessageRequest{
		Target: &v1.SendMessageRequest_GroupId{GroupId: g.GetId()}, ClientMsgId: "m3",
		Content: &v1.SendMessageRequest_Attachment{Attachment: &v1.Attachment{Id: attID(t, up), Kind: v1.AttachmentKind_ATTACHMENT_KIND_IMAGE}},
	}); err != nil {
		t.Fatal(err)
	}
	edit := func(cl *client, seq int64, text string) (*v1.EditMessageResponse, error) {
		return cl.Chat.EditMessage(context.Background(), &v1.EditMessageRequest{ConversationId: conv, Seq: seq, Text: text})
	}
	bEv, a2Ev := e.connect(t, b), e.connect(t, a2)

	step(t, "the sender edits; every member and the sender's other devices see the new text", func(t *testing.T) {
		res, err := edit(a, 1, "hello")
		if err != nil {
			t.Fatal(err)
		}
		want := sentText(conv, 1, a.ID, "m1", "hello")
		want.EditedAt = set
		wantProto(t, "edited", want, res.GetMessage(), anyTime)
		for _, ev := range []*events{bEv, a2Ev} {
			got := ev.nextWhere(func(ev *v1.Event) bool { return ev.GetMessageEdited() != nil }).GetMessageEdited()
			wantProto(t, "message_edited", &v1.MessageEdited{ConversationId: conv, Seq: 1, SenderId: a.ID, Text: "hello", EditedAt: set}, got, anyTime)
		}
		msgs := history(t, c, conv)
		wantProto(t, "listed", want, messageAt(msgs, 1), anyTime)
		if txt := messageAt(msgs, 2).GetReplyTo().GetText(); txt != "hello" {
			t.Fatalf("a reply's preview shows %q after the edit", txt)
		}
	})

	step(t, "who may edit what", func(t *testing.T) {
		_, err := edit(b, 1, "mine now") // not the sender
		wantCode(t, err, connect.CodePermissionDenied)
		_, err = edit(a, 3, "caption?") // an attachment
		wantCode(t, err, connect.CodeFailedPrecondition)
		_, err = edit(a, 99, "nothing")
		wantCode(t, err, connect.CodeNotFound)
		outsider := e.register(t, "out")
		_, err = edit(outsider, 1, "hi")
		wantCode(t, err, connect.CodeNotFound)
		_, err = edit(a, 1, "  ")
		wantInvalid(t, err, "text")
		_, err = edit(a, 1, strings.Repeat("x", 4001))
		wantInvalid(t, err, "text")
		if _, err := b.Chat.RecallMessage(context.Background(), &v1.RecallMessageRequest{ConversationId: conv, Seq: 2}); err != nil {
			t.Fatal(err)
		}
		_, err = edit(b, 2, "after recall")
		wantCode(t, err, connect.CodeFailedPrecondition)
		if got := messageAt(history(t, a, conv), 2); got.GetText() != "" || got.GetEditedAt() != nil {
			t.Fatalf("recalled message after a refused edit: %v", got)
		}
	})

	step(t, "a forwarded copy is not the forwarder's to edit", func(t *testing.T) {
		ab := makeContacts(t, b, c)
		chatSend(t, b, peerText(c.ID, "p1", "original"))
		res, err := c.Chat.ForwardMessage(context.Background(), &v1.ForwardMessageRequest{
			ConversationId: ab, Seq: 1, ClientMsgId: "fw", Target: &v1.ForwardMessageRequest_GroupId{GroupId: g.GetId()},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = edit(c, res.GetMessage().GetSeq(), "changed")
		wantCode(t, err, connect.CodeFailedPrecondition)
	})

	step(t, "raw JSON", func(t *testing.T) {
		status, body, raw := e.postJSON(t, "/karlmalone.v1.ChatService/EditMessage", a.Token,
			fmt.Sprintf(`{"conversationId":"%d","seq":"1","text":"hello again"}`, conv))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, raw)
		}
		msg := body["message"].(map[string]any)
		if msg["text"] != "hello again" || msg["editedAt"] == nil {
			t.Fatalf("json edit answer %s", raw)
		}
	})
}

func TestChatEditWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) { c.EditWindow = time.Microsecond }))
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	chatSend(t, a, peerText(b.ID, "m1", "too late"))
	_, err := a.Chat.EditMessage(context.Background(), &v1.EditMessageRequest{ConversationId: conv, Seq: 1, Text: "fixed"})
	wantCode(t, err, connect.CodeFailedPrecondition)
	if !strings.Contains(err.Error(), "edit window") {
		t.Fatalf("error %v does not name the edit window", err)
	}
}

func TestChatReactions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "cid")
	a2 := e.login(t, a.Phone, a.Password)
	g := newGroup(t, a, b, c)
	conv := g.GetConversationId()
	chatSend(t, b, groupText(g.GetId(), "m1", "party tonight"))
	chatSend(t, b, groupText(g.GetId(), "m2", "oops"))
	react := func(cl *client, seq int64, emoji string) (*v1.SetReactionResponse, error) {
		return cl.Chat.SetReaction(context.Background(), &v1.SetReactionRequest{ConversationId: conv, Seq: seq, Emoji: emoji})
	}
	mustReact := func(t *testing.T, cl *client, seq int64, emoji string) []*v1.ReactionCount {
		t.Helper()
		res, err := react(cl, seq, emoji)
		if err != nil {
			t.Fatalf("SetReaction %q: %v", emoji, err)
		}
		return res.GetReactions()
	}
	isReaction := func(ev *v1.Event) bool { return ev.GetReaction() != nil }
	bEv, a2Ev := e.connect(t, b), e.connect(t, a2)

	step(t, "a reaction is pushed to every member and the reactor's other devices", func(t *testing.T) {
		got := mustReact(t, a, 1, "👍")
		wantProto(t, "counts", []*v1.ReactionCount{{Emoji: "👍", Count: 1, ReactedByMe: true}}, got)
		for _, ev := range []*events{bEv, a2Ev} {
			wantProto(t, "reaction event", &v1.ReactionChanged{ConversationId: conv, Seq: 1, MemberId: a.ID, Emoji: "👍"},
				ev.nextWhere(isReaction).GetReaction())
		}
	})

	step(t, "one reaction per member: a second replaces the first", func(t *testing.T) {
		mustReact(t, c, 1, "👍")
		got := mustReact(t, a, 1, "❤️")
		wantProto(t, "counts", []*v1.ReactionCount{{Emoji: "👍", Count: 1}, {Emoji: "❤️", Count: 1, ReactedByMe: true}}, got)
		wantProto(t, "replacing", &v1.ReactionChanged{ConversationId: conv, Seq: 1, MemberId: a.ID, Emoji: "❤️", PreviousEmoji: "👍"},
			a2Ev.nextWhere(func(ev *v1.Event) bool { return isReaction(ev) && ev.GetReaction().GetMemberId() == a.ID }).GetReaction())
	})

	step(t, "ListMessages brings counts and whether I reacted", func(t *testing.T) {
		wantProto(t, "ann's view", []*v1.ReactionCount{{Emoji: "👍", Count: 1}, {Emoji: "❤️", Count: 1, ReactedByMe: true}},
			messageAt(history(t, a, conv), 1).GetReactions())
		wantProto(t, "cid's view", []*v1.ReactionCount{{Emoji: "👍", Count: 1, ReactedByMe: true}, {Emoji: "❤️", Count: 1}},
			messageAt(history(t, c, conv), 1).GetReactions())
		if r := messageAt(history(t, a, conv), 2).GetReactions(); len(r) != 0 {
			t.Fatalf("message 2 has reactions %v", r)
		}
	})

	step(t, "clearing, and clearing again", func(t *testing.T) {
		got := mustReact(t, a, 1, "")
		wantProto(t, "counts", []*v1.ReactionCount{{Emoji: "👍", Count: 1}}, got)
		wantProto(t, "cleared", &v1.ReactionChanged{ConversationId: conv, Seq: 1, MemberId: a.ID, PreviousEmoji: "❤️"},
			a2Ev.nextWhere(func(ev *v1.Event) bool { return isReaction(ev) && ev.GetReaction().GetMemberId() == a.ID }).GetReaction())
		mustReact(t, a, 1, "") // nothing left to clear: fine, no event
	})

	step(t, "who may react, and with what", func(t *testing.T) {
		outsider := e.register(t, "out")
		_, err := react(outsider, 1, "👍")
		wantCode(t, err, connect.CodeNotFound)
		_, err = react(outsider, 1, "")
		wantCode(t, err, connect.CodeNotFound)
		_, err = react(a, 99, "👍")
		wantCode(t, err, connect.CodeNotFound)
		for _, bad := range []string{"ok", "👍👍", "<3", strings.Repeat("👍", 40)} {
			_, err = react(a, 1, bad)
			wantInvalid(t, err, "emoji")
		}
		if _, err := b.Chat.RecallMessage(context.Background(), &v1.RecallMessageRequest{ConversationId: conv, Seq: 2}); err != nil {
			t.Fatal(err)
		}
		_, err = react(a, 2, "😮")
		wantCode(t, err, connect.CodeFailedPrecondition)
	})

	step(t, "raw JSON", func(t *testing.T) {
		status, body, raw := e.postJSON(t, "/karlmalone.v1.ChatService/SetReaction", b.Token,
			fmt.Sprintf(`{"conversationId":"%d","seq":"1","emoji":"🎉"}`, conv))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, raw)
		}
		if n := len(body["reactions"].([]any)); n != 2 {
			t.Fatalf("json reactions %s", raw)
		}
	})
}

// conversationOf is c's entry for convID in ListConversations (nil if none).
func conversationOf(t testing.TB, c *client, convID int64) *v1.Conversation {
	t.Helper()
	for _, page := range pages(t, func(token string) (*v1.ListConversationsResponse, error) {
		return c.Chat.ListConversations(context.Background(), &v1.ListConversationsRequest{PageSize: 100, PageToken: token})
	}) {
		for _, cv := range page.GetConversations() {
			if cv.GetId() == convID {
				return cv
			}
		}
	}
	return nil
}

func TestChatMentions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c, d, out := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "cid"), e.register(t, "dan"), e.register(t, "out")
	c2 := e.login(t, c.Phone, c.Password)
	g := newGroup(t, a, b, c, d)
	conv := g.GetConversationId()
	if _, err := a.Groups.SetMemberRole(context.Background(), &v1.SetMemberRoleRequest{GroupId: g.GetId(), MemberId: b.ID, Role: v1.GroupRole_GROUP_ROLE_ADMIN}); err != nil {
		t.Fatal(err)
	}
	mention := func(cl *client, key string, everyone bool, ids ...int64) (*v1.SendMessageResponse, error) {
		req := groupText(g.GetId(), key, "hey @you")
		req.Mentions, req.MentionEveryone = ids, everyone
		return cl.Chat.SendMessage(context.Background(), req)
	}
	mentionedMe := func(t *testing.T, cl *client) bool {
		t.Helper()
		return conversationOf(t, cl, conv).GetMentionedMe()
	}
	dEv, c2Ev := e.connect(t, d), e.connect(t, c2)

	step(t, "a member mentions members; non-members are dropped; pushed with the mentions", func(t *testing.T) {
		res, err := mention(c, "m1", false, d.ID, out.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := sentText(conv, 1, c.ID, "m1", "hey @you")
		want.Mentions = []int64{d.ID}
		wantProto(t, "sent", want, res.GetMessage(), anyTime)
		for _, ev := range []*events{dEv, c2Ev} {
			wantProto(t, "pushed", want, ev.nextWhere(isMessage).GetMessage(), anyTime)
		}
		wantProto(t, "listed", want, messageAt(history(t, a, conv), 1), anyTime)
	})

	step(t, "mentioned_me until read", func(t *testing.T) {
		if !mentionedMe(t, d) {
			t.Fatal("dan is not told he was mentioned")
		}
		if mentionedMe(t, a) || mentionedMe(t, c) {
			t.Fatal("mentioned_me for a member not mentioned, or for the sender")
		}
		chatSend(t, a, groupText(g.GetId(), "m2", "later message"))
		if _, err := d.Chat.MarkRead(context.Background(), &v1.MarkReadRequest{ConversationId: conv, Seq: 1}); err != nil {
			t.Fatal(err)
		}
		if mentionedMe(t, d) {
			t.Fatal("mentioned_me after reading past the mention")
		}
	})

	step(t, "everyone: the owner and admins only", func(t *testing.T) {
		_, err := mention(c, "e1", true)
		wantCode(t, err, connect.CodePermissionDenied)
		if got := conversationOf(t, a, conv).GetLastSeq(); got != 2 {
			t.Fatalf("a refused @everyone moved last_seq to %d", got)
		}
		res, err := mention(b, "e2", true) // bob is an admin
		if err != nil {
			t.Fatal(err)
		}
		if !res.GetMessage().GetMentionEveryone() {
			t.Fatalf("sent %v", res.GetMessage())
		}
		for _, cl := range []*client{a, c, d} {
			if !mentionedMe(t, cl) {
				t.Fatalf("member %d not mentioned by @everyone", cl.ID)
			}
		}
		if mentionedMe(t, b) {
			t.Fatal("the sender of @everyone is mentioned")
		}
		if _, err := mention(a, "e3", true); err != nil { // the owner
			t.Fatal(err)
		}
	})

	step(t, "a recalled mention no longer counts", func(t *testing.T) {
		chatSend(t, d, groupText(g.GetId(), "read", "all read")) // dan's own message moves his cursor
		res, err := mention(c, "m3", false, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !mentionedMe(t, d) {
			t.Fatal("not mentioned")
		}
		if _, err := c.Chat.RecallMessage(context.Background(), &v1.RecallMessageRequest{ConversationId: conv, Seq: res.GetMessage().GetSeq()}); err != nil {
			t.Fatal(err)
		}
		if mentionedMe(t, d) {
			t.Fatal("mentioned_me after the mention was recalled")
		}
	})

	step(t, "what may not be mentioned", func(t *testing.T) {
		makeContacts(t, c, d)
		req := peerText(d.ID, "p1", "hi")
		req.Mentions = []int64{d.ID}
		_, err := c.Chat.SendMessage(context.Background(), req)
		wantInvalid(t, err, "mentions")
		_, err = mention(c, "x1", false, d.ID, d.ID)
		wantInvalid(t, err, "mentions")
		_, err = mention(c, "x2", false, 0)
		wantInvalid(t, err, "mentions")
		many := make([]int64, 51)
		for i := range many {
			many[i] = int64(i + 1)
		}
		_, err = mention(c, "x3", false, many...)
		wantInvalid(t, err, "mentions")
	})

	step(t, "raw JSON", func(t *testing.T) {
		status, body, raw := e.postJSON(t, "/karlmalone.v1.ChatService/SendMessage", c.Token,
			fmt.Sprintf(`{"groupId":"%d","clientMsgId":"j1","text":"yo","mentions":["%d"]}`, g.GetId(), a.ID))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, raw)
		}
		wantFields(t, "json mention", map[string]any{"mentions": []any{fmt.Sprint(a.ID)}}, body["message"].(map[string]any))
		status, body, raw = e.postJSON(t, "/karlmalone.v1.ChatService/SendMessage", c.Token,
			fmt.Sprintf(`{"groupId":"%d","clientMsgId":"j2","text":"all","mentionEveryone":true}`, g.GetId()))
		if status != http.StatusForbidden || body["code"] != "permission_denied" {
			t.Fatalf("json @everyone from a member: %d %s", status, raw)
		}
	})
}

func TestChatConversationSettings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "cid")
	a2 := e.login(t, a.Phone, a.Password)
	ab, ac := makeContacts(t, a, b), makeContacts(t, a, c)
	g := newGroup(t, a, b, c)
	gc := g.GetConversationId()
	chatSend(t, b, peerText(a.ID, "1", "one"))
	chatSend(t, c, peerText(a.ID, "1", "two"))
	for i := range 3 {
		chatSend(t, b, groupText(g.GetId(), fmt.Sprint("g", i), "group"))
	}
	update := func(req *v1.UpdateConversationSettingsRequest) *v1.ConversationSettings {
		t.Helper()
		res, err := a.Chat.UpdateConversationSettings(context.Background(), req)
		if err != nil {
			t.Fatalf("UpdateConversationSettings: %v", err)
		}
		return res.GetSettings()
	}
	order := func(t *testing.T, pageSize int32) []int64 {
		t.Helper()
		var ids []int64
		for _, page := range pages(t, func(token string) (*v1.ListConversationsResponse, error) {
			return a.Chat.ListConversations(context.Background(), &v1.ListConversationsRequest{PageSize: pageSize, PageToken: token})
		}) {
			for _, cv := range page.GetConversations() {
				ids = append(ids, cv.GetId())
			}
		}
		return ids
	}
	isSettings := func(ev *v1.Event) bool { return ev.GetConversationSettingsChanged() != nil }
	a2Ev, bEv := e.connect(t, a2), e.connect(t, b)
	yes, no := true, false

	step(t, "pinned conversations come first, the latest pinned first, on every page", func(t *testing.T) {
		if got := order(t, 100); !slices.Equal(got, []int64{gc, ac, ab}) {
			t.Fatalf("by activity: %v", got)
		}
		got := update(&v1.UpdateConversationSettingsRequest{ConversationId: ab, Pinned: &yes})
		if got.GetPinnedAt() == nil {
			t.Fatalf("pinned: %v", got)
		}
		wantProto(t, "synced to ann's other device", got, a2Ev.nextWhere(isSettings).GetConversationSettingsChanged())
		update(&v1.UpdateConversationSettingsRequest{ConversationId: ac, Pinned: &yes})
		for _, size := range []int32{100, 1} {
			if got := order(t, size); !slices.Equal(got, []int64{ac, ab, gc}) {
				t.Fatalf("pages of %d: %v", size, got)
			}
		}
		update(&v1.UpdateConversationSettingsRequest{ConversationId: ab, Pinned: &yes}) // again: to the top
		update(&v1.UpdateConversationSettingsRequest{ConversationId: ac, Pinned: &no})
		if got := order(t, 1); !slices.Equal(got, []int64{ab, gc, ac}) {
			t.Fatalf("after re-pin and unpin: %v", got)
		}
		if cv := conversationOf(t, b, ab); cv.GetSettings().GetPinnedAt() != nil {
			t.Fatalf("ann's pin shows for bob: %v", cv.GetSettings())
		}
	})

	step(t, "mute until a time, forever, unmute; mentions still arrive", func(t *testing.T) {
		until := timestamppb.New(time.Now().Add(time.Hour).Truncate(time.Microsecond))
		got := update(&v1.UpdateConversationSettingsRequest{ConversationId: gc, Mute: &v1.UpdateConversationSettingsRequest_MuteUntil{MuteUntil: until}})
		wantProto(t, "muted until", &v1.ConversationSettings{ConversationId: gc, MutedUntil: until, Muted: true}, got)
		got = update(&v1.UpdateConversationSettingsRequest{ConversationId: gc, Mute: &v1.UpdateConversationSettingsRequest_MuteForever{MuteForever: true}, Archived: &yes})
		wantProto(t, "muted forever and archived", &v1.ConversationSettings{ConversationId: gc, MutedForever: true, Muted: true, Archived: true}, got)
		wantProto(t, "listed", got, conversationOf(t, a, gc).GetSettings())

		req := groupText(g.GetId(), "mention", "@ann look")
		req.Mentions = []int64{a.ID}
		chatSend(t, b, req)
		if got := a2Ev.nextWhere(isMessage).GetMessage(); !slices.Equal(got.GetMentions(), []int64{a.ID}) {
			t.Fatalf("muted ann's device got %v", got)
		}
		if !conversationOf(t, a, gc).GetMentionedMe() {
			t.Fatal("mentioned_me in a muted group")
		}

		got = update(&v1.UpdateConversationSettingsRequest{ConversationId: gc, Mute: &v1.UpdateConversationSettingsRequest_Unmute{Unmute: true}})
		wantProto(t, "unmuted, still archived", &v1.ConversationSettings{ConversationId: gc, Archived: true}, got)
		_, err := a.Chat.UpdateConversationSettings(context.Background(), &v1.UpdateConversationSettingsRequest{
			ConversationId: gc, Mute: &v1.UpdateConversationSettingsRequest_MuteUntil{MuteUntil: timestamppb.New(time.Now().Add(-time.Minute))},
		})
		wantInvalid(t, err, "mute_until")
		_, err = a.Chat.UpdateConversationSettings(context.Background(), &v1.UpdateConversationSettingsRequest{
			ConversationId: gc, Mute: &v1.UpdateConversationSettingsRequest_MuteForever{MuteForever: false},
		})
		wantInvalid(t, err, "mute_forever")
	})

	step(t, "settings events go to the member's own devices only", func(t *testing.T) {
		update(&v1.UpdateConversationSettingsRequest{ConversationId: ab, Archived: &yes})
		chatSend(t, a, peerText(b.ID, "after", "next")) // bob's next event is this message, not ann's settings
		after := func(ev *v1.Event) bool { return ev.GetMessage().GetClientMsgId() == "after" }
		if ev := bEv.nextWhere(func(ev *v1.Event) bool { return after(ev) || isSettings(ev) }); !after(ev) {
			t.Fatalf("bob got %v", ev)
		}
	})

	step(t, "clear history for me: gone for ann only, unread and mentions respect it", func(t *testing.T) {
		res, err := a.Chat.ClearConversationHistory(context.Background(), &v1.ClearConversationHistoryRequest{ConversationId: gc})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetSettings().GetClearedSeq() != 4 {
			t.Fatalf("cleared to %v", res.GetSettings())
		}
		a2Ev.nextWhere(func(ev *v1.Event) bool { return ev.GetConversationSettingsChanged().GetClearedSeq() == 4 })
		if msgs := history(t, a, gc); len(msgs) != 0 {
			t.Fatalf("ann still sees %v", seqsOf(msgs))
		}
		if msgs := history(t, b, gc); len(msgs) != 4 {
			t.Fatalf("bob sees %v", seqsOf(msgs))
		}
		cv := conversationOf(t, a, gc)
		if cv.GetUnreadCount() != 0 || cv.GetMentionedMe() || cv.GetLastMessage() != nil || cv.GetLastSeq() != 4 {
			t.Fatalf("ann's conversation after clearing: %v", cv)
		}
		chatSend(t, b, groupText(g.GetId(), "new", "fresh"))
		cv = conversationOf(t, a, gc)
		if cv.GetUnreadCount() != 1 || cv.GetLastMessage().GetSeq() != 5 {
			t.Fatalf("ann's conversation after a new message: %v", cv)
		}
		if got := seqsOf(history(t, a, gc)); !slices.Equal(got, []int64{5}) {
			t.Fatalf("ann reads %v", got)
		}
		res, err = a.Chat.ClearConversationHistory(context.Background(), &v1.ClearConversationHistoryRequest{ConversationId: gc, UpToSeq: 2})
		if err != nil || res.GetSettings().GetClearedSeq() != 4 {
			t.Fatalf("the floor moved back: %v %v", res, err)
		}
	})

	step(t, "what is cleared cannot be quoted, forwarded or reacted to by ann", func(t *testing.T) {
		_, err := a.Chat.SendMessage(context.Background(), replyText(groupText(g.GetId(), "re", "re"), 2))
		wantCode(t, err, connect.CodeNotFound)
		_, err = a.Chat.ForwardMessage(context.Background(), &v1.ForwardMessageRequest{
			ConversationId: gc, Seq: 2, ClientMsgId: "fw", Target: &v1.ForwardMessageRequest_PeerId{PeerId: b.ID},
		})
		wantCode(t, err, connect.CodeNotFound)
		_, err = a.Chat.SetReaction(context.Background(), &v1.SetReactionRequest{ConversationId: gc, Seq: 2, Emoji: "👍"})
		wantCode(t, err, connect.CodeNotFound)
		if _, err := b.Chat.SetReaction(context.Background(), &v1.SetReactionRequest{ConversationId: gc, Seq: 2, Emoji: "👍"}); err != nil {
			t.Fatal(err) // bob still can
		}
	})

	step(t, "only members have settings", func(t *testing.T) {
		out := e.register(t, "out")
		_, err := out.Chat.UpdateConversationSettings(context.Background(), &v1.UpdateConversationSettingsRequest{ConversationId: gc, Pinned: &yes})
		wantCode(t, err, connect.CodeNotFound)
		_, err = out.Chat.ClearConversationHistory(context.Background(), &v1.ClearConversationHistoryRequest{ConversationId: gc})
		wantCode(t, err, connect.CodeNotFound)
		_, err = a.Chat.ClearConversationHistory(context.Background(), &v1.ClearConversationHistoryRequest{ConversationId: gc, UpToSeq: -1})
		wantInvalid(t, err, "up_to_seq")
	})

	step(t, "raw JSON", func(t *testing.T) {
		status, body, raw := e.postJSON(t, "/karlmalone.v1.ChatService/UpdateConversationSettings", a.Token,
			fmt.Sprintf(`{"conversationId":"%d","muteForever":true,"pinned":false}`, ab))
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, raw)
		}
		wantFields(t, "json settings", map[string]any{"mutedForever": true, "muted": true, "archived": true},
			body["settings"].(map[string]any))
		if _, pinned := body["settings"].(map[string]any)["pinnedAt"]; pinned {
			t.Fatalf("still pinned: %s", raw)
		}
		status, body, raw = e.postJSON(t, "/karlmalone.v1.ChatService/ClearConversationHistory", a.Token,
			fmt.Sprintf(`{"conversationId":"%d","upToSeq":"1"}`, ab))
		if status != http.StatusOK || body["settings"].(map[string]any)["clearedSeq"] != "1" {
			t.Fatalf("json clear: %d %s", status, raw)
		}
	})
}
