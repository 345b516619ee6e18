package server_test

import (
	"context"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// searchAll pages through every match of query for c (in conversation
// convID, or all when 0), page_size at a time, and returns the client ids
// of the messages found, in the order found.
func searchAll(t testing.TB, c *client, convID int64, query string, pageSize int32) []string {
	t.Helper()
	var out []string
	for _, page := range pages(t, func(token string) (*v1.SearchMessagesResponse, error) {
		return c.Chat.SearchMessages(context.Background(), &v1.SearchMessagesRequest{
			Query: query, ConversationId: convID, PageSize: pageSize, PageToken: token,
		})
	}) {
		out = append(out, clientMsgIDs(page.GetMessages())...)
	}
	return out
}

func TestSearchMessages(t *testing.T) {
	e := newEnv(t)
	alice, bob, carol := e.register(t, "alice"), e.register(t, "bob"), e.register(t, "carol")
	direct := makeContacts(t, alice, bob)
	g := newGroup(t, alice, bob, carol)
	ctx := context.Background()

	chatSend(t, alice, peerText(bob.ID, "d1", "Hello Bob, lunch today?"))
	chatSend(t, bob, peerText(alice.ID, "d2", "hello! yes, lunch at noon"))
	chatSend(t, alice, peerText(bob.ID, "d3", "see you"))
	chatSend(t, carol, groupText(g.GetId(), "g1", "HELLO group, who wants lunch?"))
	chatSend(t, bob, groupText(g.GetId(), "g2", "Привет всем, обед?"))

	step(t, "newest first, in every conversation of the caller, case-insensitive", func(t *testing.T) {
		wantProto(t, "alice: hello", []string{"g1", "d2", "d1"}, searchAll(t, alice, 0, "hello", 0))
		wantProto(t, "alice: lunch, one per page", []string{"g1", "d2", "d1"}, searchAll(t, alice, 0, "lunch", 1))
		wantProto(t, "alice: two words", []string{"d2", "d1"}, searchAll(t, alice, 0, "hello yes OR today", 0))
		wantProto(t, "alice: a phrase", []string{"d1"}, searchAll(t, alice, 0, `"lunch today"`, 0))
		wantProto(t, "alice: without a word", []string{"g1", "d1"}, searchAll(t, alice, 0, "lunch -noon", 0))
		wantProto(t, "not English", []string{"g2"}, searchAll(t, alice, 0, "привет", 0))
	})
	step(t, "attachments by their caption", func(t *testing.T) {
		up := attUpload(t, e, alice, "image/png", attBytes(pngHeader, 100))
		chatSend(t, alice, &v1.SendMessageRequest{
			Target: &v1.SendMessageRequest_PeerId{PeerId: bob.ID}, ClientMsgId: "p1",
			Content: &v1.SendMessageRequest_Attachment{Attachment: &v1.Attachment{
				Id: attID(t, up), Kind: v1.AttachmentKind_ATTACHMENT_KIND_IMAGE, Caption: "Holiday photo",
			}},
		})
		wantProto(t, "bob: holiday", []string{"p1"}, searchAll(t, bob, 0, "holiday", 0))
	})
	step(t, "one conversation", func(t *testing.T) {
		wantProto(t, "direct", []string{"d2", "d1"}, searchAll(t, alice, direct, "hello", 0))
		wantProto(t, "group", []string{"g1"}, searchAll(t, alice, g.GetConversationId(), "hello", 0))
	})
	step(t, "the whole message, as ListMessages shows it", func(t *testing.T) {
		res, err := alice.Chat.SearchMessages(ctx, &v1.SearchMessagesRequest{Query: "noon"})
		if err != nil {
			t.Fatal(err)
		}
		wantProto(t, "found", []*v1.Message{chatHistory(t, alice, direct)[1]}, res.GetMessages())
	})
	step(t, "others' conversations find nothing", func(t *testing.T) {
		// Carol is in the group, not in alice and bob's conversation: naming
		// it finds nothing, as a conversation that does not exist.
		wantProto(t, "carol: hello", []string{"g1"}, searchAll(t, carol, 0, "hello", 0))
		wantProto(t, "carol in theirs", []string(nil), searchAll(t, carol, direct, "hello", 0))
		wantProto(t, "no such conversation", []string(nil), searchAll(t, carol, 1<<40, "hello", 0))
	})
	step(t, "recalled messages are not found", func(t *testing.T) {
		if _, err := bob.Chat.RecallMessage(ctx, &v1.RecallMessageRequest{ConversationId: direct, Seq: 2}); err != nil {
			t.Fatal(err)
		}
		wantProto(t, "alice: hello", []string{"g1", "d1"}, searchAll(t, alice, 0, "hello", 0))
		wantProto(t, "bob: noon", []string(nil), searchAll(t, bob, 0, "noon", 0))
	})
	step(t, "a group left is no longer searched", func(t *testing.T) {
		if _, err := carol.Groups.LeaveGroup(ctx, &v1.LeaveGroupRequest{GroupId: g.GetId()}); err != nil {
			t.Fatal(err)
		}
		wantProto(t, "carol: hello", []string(nil), searchAll(t, carol, 0, "hello", 0))
		wantProto(t, "carol: in the group", []string(nil), searchAll(t, carol, g.GetConversationId(), "hello", 0))
	})
	step(t, "raw JSON", func(t *testing.T) {
		status, body, raw := e.postJSON(t, "/karlmalone.v1.ChatService/SearchMessages", alice.Token,
			fmt.Sprintf(`{"query":"lunch","conversationId":"%d","pageSize":1}`, direct))
		if status != 200 {
			t.Fatalf("status %d: %s", status, raw)
		}
		msgs, _ := body["messages"].([]any)
		if len(msgs) != 1 || body["nextPageToken"] == "" {
			t.Fatalf("one message and a next page expected: %s", raw)
		}
		wantFields(t, "message", map[string]any{"text": "Hello Bob, lunch today?", "seq": "1"}, msgs[0].(map[string]any))
		status, _, raw = e.postJSON(t, "/karlmalone.v1.ChatService/SearchMessages", "", `{"query":"lunch"}`)
		if status != 401 {
			t.Fatalf("without a token: %d %s", status, raw)
		}
	})
	step(t, "bad requests", func(t *testing.T) {
		_, err := alice.Chat.SearchMessages(ctx, &v1.SearchMessagesRequest{Query: "  "})
		wantInvalid(t, err, "query")
		_, err = alice.Chat.SearchMessages(ctx, &v1.SearchMessagesRequest{Query: "a", PageToken: "junk"})
		wantInvalid(t, err, "page_token")
		_, err = alice.Chat.SearchMessages(ctx, &v1.SearchMessagesRequest{Query: "a", ConversationId: -1})
		wantInvalid(t, err, "conversation_id")
		// Punctuation alone makes no words: nothing matches, no error.
		wantProto(t, "punctuation", []string(nil), searchAll(t, alice, 0, "!!! ???", 0))
		_, err = alice.Chat.SearchMessages(ctx, &v1.SearchMessagesRequest{Query: string(make([]byte, 257))})
		wantCode(t, err, connect.CodeInvalidArgument)
	})
}
