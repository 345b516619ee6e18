package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/notify"
	"github.com/karlmalone/karlmalone/server"
)

const hookSecret = "hook secret"

// hookGateway is a webhook receiver in the test: it checks each POST's
// signature and hands the bodies over in order.
func hookGateway(t *testing.T) (url string, bodies <-chan []byte) {
	t.Helper()
	ch := make(chan []byte, 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !notify.Verify(hookSecret, r.Header.Get(notify.HeaderTimestamp), r.Header.Get(notify.HeaderSignature), body) {
			t.Errorf("bad signature on %s", body)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		ch <- body
	}))
	t.Cleanup(srv.Close)
	return srv.URL, ch
}

func nextBody(t *testing.T, bodies <-chan []byte) []byte {
	t.Helper()
	select {
	case b := <-bodies:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook delivery in 10 s")
		return nil
	}
}

// hookConfig is a webhook to hookGateway with one worker: deliveries arrive
// in the order they were queued, so a delivery that arrives proves none was
// queued before it unseen.
func hookConfig(t *testing.T) (notify.Config, <-chan []byte) {
	url, bodies := hookGateway(t)
	return notify.Config{URL: url, Secret: hookSecret, Workers: 1, Backoff: time.Millisecond}, bodies
}

func TestOfflineNotifications(t *testing.T) {
	cfg, bodies := hookConfig(t)
	hook := notify.NewWebhook(cfg, nil, nil)
	t.Cleanup(hook.Close)
	e := newEnv(t, func(d *server.Deps) { d.Notifier = hook })
	alice, bob, carol, dave := e.register(t, "alice"), e.register(t, "bob"), e.register(t, "carol"), e.register(t, "dave")
	g := newGroup(t, alice, bob, carol, dave)
	makeContacts(t, bob, carol)
	e.connect(t, alice) // alice and carol are online, bob and dave are not
	e.connect(t, carol)

	type note struct {
		MemberID       int64 `json:"memberId,string"`
		ConversationID int64 `json:"conversationId,string"`
		Seq            int64 `json:"seq,string"`
		SenderID       int64 `json:"senderId,string"`
		Count          int   `json:"count"`
	}
	next := func() note {
		t.Helper()
		var n note
		if err := json.Unmarshal(nextBody(t, bodies), &n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	m := chatSend(t, alice, groupText(g.GetId(), "g1", "dinner?"))
	// The offline members, in the order of the message's recipients; not
	// alice, the sender, nor carol, online.
	got := []note{next(), next()}
	if got[0].MemberID > got[1].MemberID {
		got[0], got[1] = got[1], got[0]
	}
	wantProto(t, "notifications", []note{
		{MemberID: bob.ID, ConversationID: g.GetConversationId(), Seq: m.GetSeq(), SenderID: alice.ID, Count: 1},
		{MemberID: dave.ID, ConversationID: g.GetConversationId(), Seq: m.GetSeq(), SenderID: alice.ID, Count: 1},
	}, got)

	// Carol to bob: only bob hears, and only once, however the burst goes.
	chatSend(t, carol, peerText(bob.ID, "c1", "psst"))
	if n := next(); n.MemberID != bob.ID || n.SenderID != carol.ID {
		t.Fatalf("then %+v", n)
	}
	// Bob comes online: nothing more for him. The next notification is dave's.
	e.connect(t, bob)
	chatSend(t, alice, groupText(g.GetId(), "g2", "7pm"))
	if n := next(); n.MemberID != dave.ID || n.Seq != m.GetSeq()+1 {
		t.Fatalf("then %+v, want dave's only", n)
	}
	waitFor(t, "the last delivery counted", func() bool { return hook.Stats().Delivered == 4 })
	if s := hook.Stats(); s.Dropped != 0 || s.Failed != 0 {
		t.Fatalf("stats %+v", s)
	}
	// The counters are on /metrics.
	res := attDo(t, e.H1, "GET", e.URL+"/metrics", "", nil, nil)
	b, _ := io.ReadAll(res.Body)
	if !regexp.MustCompile(`(?m)^karlmalone_notify_delivered_total 4$`).Match(b) || !regexp.MustCompile(`(?m)^karlmalone_notify_dropped_total 0$`).Match(b) {
		t.Fatalf("metrics:\n%s", b)
	}
}

func TestIntegrationWebhook(t *testing.T) {
	cfg, bodies := hookConfig(t)
	events := notify.NewEvents(cfg, nil, nil)
	t.Cleanup(events.Close)
	e := newEnv(t, func(d *server.Deps) { d.Integrations = events })
	alice, bob := e.register(t, "alice"), e.register(t, "bob")
	direct := makeContacts(t, alice, bob) // contacts: not an integration event
	g := newGroup(t, alice, bob)
	chatSend(t, alice, peerText(bob.ID, "d1", "hello"))
	if _, err := bob.Chat.MarkRead(t.Context(), &v1.MarkReadRequest{ConversationId: direct, Seq: 1}); err != nil {
		t.Fatal(err) // a read receipt: not an integration event
	}
	if _, err := bob.Groups.LeaveGroup(t.Context(), &v1.LeaveGroupRequest{GroupId: g.GetId()}); err != nil {
		t.Fatal(err)
	}
	next := func() *v1.Event {
		t.Helper()
		ev := &v1.Event{}
		if err := protojson.Unmarshal(nextBody(t, bodies), ev); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	if ev := next(); ev.GetGroupCreated().GetId() != g.GetId() {
		t.Fatalf("first %v, want group_created", ev)
	}
	if ev := next(); ev.GetMessage().GetText() != "hello" || ev.GetAt() == nil {
		t.Fatalf("then %v, want the message", ev)
	}
	wantProto(t, "then", memberChange(g.GetId(), bob.ID, bob.ID, v1.GroupRole_GROUP_ROLE_UNSPECIFIED), next().GetMemberLeft())

	// What no member hears of, an integration still does: carol, alone in
	// her group, deletes her account.
	carol := e.register(t, "carol")
	alone := newGroup(t, carol)
	if _, err := carol.Members.DeleteAccount(t.Context(), &v1.DeleteAccountRequest{Password: carol.Password}); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.GetGroupCreated().GetId() != alone.GetId() {
		t.Fatalf("then %v, want group_created", ev)
	}
	wantProto(t, "then", &v1.GroupDissolved{GroupId: alone.GetId()}, next().GetGroupDissolved())
	wantProto(t, "then", &v1.MemberDeleted{MemberId: carol.ID}, next().GetMemberDeleted())
}
