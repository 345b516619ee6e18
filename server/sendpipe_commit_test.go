package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// Texts that poisonCommits makes fail at COMMIT.
const (
	poisonRaise = "poison: raise" // the commit fails with an error
	poisonCut   = "poison: cut"   // the connection dies during the commit
)

// poisonCommits installs a deferred constraint trigger on messages that, at
// COMMIT, raises for a message whose text is poisonRaise and terminates its
// own backend for one whose text is poisonCut. This is SQL in a test because
// it injects a fault the API cannot produce: every statement of the
// transaction succeeds and only the commit fails (as a deferred constraint, a
// serialization failure or a lost connection would). The returned func
// removes the trigger.
func poisonCommits(t testing.TB, e *env) (cure func()) {
	t.Helper()
	for _, sql := range []string{
		`CREATE FUNCTION test_poison_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.body = '` + poisonRaise + `' THEN
				RAISE EXCEPTION 'poisoned message';
			ELSIF NEW.body = '` + poisonCut + `' THEN
				PERFORM pg_terminate_backend(pg_backend_pid());
			END IF;
			RETURN NULL;
		END $$`,
		`CREATE CONSTRAINT TRIGGER test_poison_commit AFTER INSERT ON messages
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_poison_commit()`,
	} {
		if _, err := e.Pool.Exec(context.Background(), sql); err != nil {
			t.Fatalf("install the poison trigger: %v", err)
		}
	}
	return func() {
		t.Helper()
		if _, err := e.Pool.Exec(context.Background(), `DROP TRIGGER test_poison_commit ON messages`); err != nil {
			t.Fatalf("drop the poison trigger: %v", err)
		}
	}
}

// TestSendFailedCommitIsNotAcknowledged: many senders at once into several
// conversations, one message poisoned so that the commit of its batch fails.
// Exactly that send fails; every other is acknowledged, stored once under the
// seq it was given, with no gap; and every message pushed to a real WebSocket
// is in history. (Before the fix the whole batch, the poisoned message
// included, was acknowledged and pushed, nothing of it stored, and its seqs
// handed out again.)
func TestSendFailedCommitIsNotAcknowledged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	poisonCommits(t, e)

	// Three direct conversations and a group, each with a receiver online.
	type conversation struct {
		id      int64
		senders []*client
		req     func(clientMsgID, text string) *v1.SendMessageRequest
		rx      *events
	}
	var convs []*conversation
	for i := range 3 {
		a, b := e.register(t, fmt.Sprint("a", i)), e.register(t, fmt.Sprint("b", i))
		convs = append(convs, &conversation{
			id: makeContacts(t, a, b), senders: []*client{a},
			req: func(id, text string) *v1.SendMessageRequest { return peerText(b.ID, id, text) },
			rx:  e.connect(t, b),
		})
	}
	g := make([]*client, 4)
	for i := range g {
		g[i] = e.register(t, fmt.Sprint("g", i))
	}
	group := newGroup(t, g[0], g[1:]...)
	convs = append(convs, &conversation{
		id: group.GetConversationId(), senders: g[:3],
		req: func(id, text string) *v1.SendMessageRequest { return groupText(group.GetId(), id, text) },
		rx:  e.connect(t, g[3]),
	})

	const senders, poisoned = 60, 37
	type outcome struct {
		conv *conversation
		id   string
		msg  *v1.Message
		err  error
	}
	out := make([]outcome, senders)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range senders {
		c := convs[i%len(convs)]
		from := c.senders[i/len(convs)%len(c.senders)]
		text := fmt.Sprint("message ", i)
		if i == poisoned {
			text = poisonRaise
		}
		out[i] = outcome{conv: c, id: fmt.Sprint("m", i)}
		wg.Go(func() {
			<-start
			res, err := from.Chat.SendMessage(context.Background(), c.req(out[i].id, text))
			out[i].msg, out[i].err = res.GetMessage(), err
		})
	}
	close(start)
	wg.Wait()

	acked := map[*conversation]map[string]*v1.Message{}
	for _, c := range convs {
		acked[c] = map[string]*v1.Message{}
	}
	for i, o := range out {
		switch {
		case i == poisoned && o.err == nil:
			t.Errorf("the poisoned send was acknowledged (seq %d) although its commit failed", o.msg.GetSeq())
		case i != poisoned && o.err != nil:
			t.Errorf("send %s: %v", o.id, o.err)
		case i != poisoned:
			acked[o.conv][o.id] = o.msg
		}
	}

	for _, c := range convs {
		// A last message: once it is pushed, everything pushed before it has been.
		last := chatSend(t, c.senders[0], c.req("last", "last"))
		acked[c]["last"] = last
		pushed := map[int64]*v1.Message{}
		for {
			m := c.rx.nextWhere(isMessage).GetMessage()
			if pushed[m.GetSeq()] != nil {
				t.Errorf("conversation %d: seq %d pushed twice", c.id, m.GetSeq())
			}
			pushed[m.GetSeq()] = m
			if m.GetClientMsgId() == "last" {
				break
			}
		}

		history := chatHistory(t, c.senders[0], c.id)
		if got := seqsOf(history); !slices.Equal(got, seqRange(1, int64(len(history)))) {
			t.Errorf("conversation %d: seqs %v, want no gap", c.id, got)
		}
		stored := map[string]*v1.Message{}
		for _, m := range history {
			if stored[m.GetClientMsgId()] != nil {
				t.Errorf("conversation %d: %s stored twice", c.id, m.GetClientMsgId())
			}
			stored[m.GetClientMsgId()] = m
		}
		for id, m := range acked[c] {
			if !sameMessage(stored[id], m) {
				t.Errorf("conversation %d: acknowledged %s (seq %d) is stored as %v", c.id, id, m.GetSeq(), stored[id])
			}
		}
		if len(history) != len(acked[c]) {
			t.Errorf("conversation %d: %d messages stored, %d acknowledged", c.id, len(history), len(acked[c]))
		}
		for seq, m := range pushed {
			if seq > int64(len(history)) || !sameMessage(m, history[seq-1]) {
				t.Errorf("conversation %d: pushed %s (seq %d) is not in history", c.id, m.GetClientMsgId(), seq)
			}
		}
		if len(pushed) != len(history) {
			t.Errorf("conversation %d: %d messages pushed, %d stored", c.id, len(pushed), len(history))
		}
	}
}

// TestSendCommitCutConvergesOnRetry: when the connection dies during the
// commit, the sender is told unavailable (the message may or may not be
// stored: it is not), the messages sent beside it are stored, and a retry
// with the same client_msg_id stores the message exactly once, with no gap.
func TestSendCommitCutConvergesOnRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cure := poisonCommits(t, e)
	a, b := e.register(t, "a"), e.register(t, "b")
	conv := makeContacts(t, a, b)
	rx := e.connect(t, b)
	chatSend(t, a, peerText(b.ID, "first", "hello"))

	// Neighbours sent at the same moment share the cut batch when they meet it.
	const neighbours = 5
	errs := make([]error, neighbours+1)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range errs {
		req := peerText(b.ID, fmt.Sprint("n", i), "neighbour")
		if i == 0 {
			req = peerText(b.ID, "cut", poisonCut)
		}
		wg.Go(func() {
			<-start
			_, errs[i] = a.Chat.SendMessage(context.Background(), req)
		})
	}
	close(start)
	wg.Wait()
	wantCode(t, errs[0], connect.CodeUnavailable)
	for i, err := range errs[1:] {
		if err != nil {
			t.Errorf("neighbour %d: %v", i, err)
		}
	}
	if got := seqsOf(chatHistory(t, a, conv)); !slices.Equal(got, seqRange(1, 1+neighbours)) {
		t.Fatalf("seqs %v after the cut, want 1..%d", got, 1+neighbours)
	}

	cure()
	retry := chatSend(t, a, peerText(b.ID, "cut", poisonCut))
	if retry.GetSeq() != 2+neighbours {
		t.Errorf("the retry got seq %d, want %d", retry.GetSeq(), 2+neighbours)
	}
	again := chatSend(t, a, peerText(b.ID, "cut", poisonCut))
	if !sameMessage(again, retry) {
		t.Errorf("a second retry got %v, want the stored %v", again, retry)
	}
	history := chatHistory(t, a, conv)
	if got := seqsOf(history); !slices.Equal(got, seqRange(1, 2+neighbours)) {
		t.Errorf("seqs %v, want 1..%d", got, 2+neighbours)
	}
	cuts := 0
	for _, m := range history {
		if m.GetClientMsgId() == "cut" {
			cuts++
		}
	}
	if cuts != 1 {
		t.Errorf("the cut message is stored %d times, want once", cuts)
	}
	for {
		m := rx.nextWhere(isMessage).GetMessage()
		if m.GetSeq() > int64(len(history)) || !sameMessage(m, history[m.GetSeq()-1]) {
			t.Fatalf("pushed %s (seq %d) is not in history", m.GetClientMsgId(), m.GetSeq())
		}
		if m.GetSeq() == retry.GetSeq() {
			break
		}
	}
}

// TestSendBatchCommitFailure: a batch whose commit fails stores nothing, so
// the pipeline stores each message again on its own: only the poisoned one
// fails, the others keep consecutive seqs, and the retry is logged with the
// batch size and the cause.
func TestSendBatchCommitFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	poisonCommits(t, e)
	a, b, c := e.register(t, "a"), e.register(t, "b"), e.register(t, "c")
	makeContacts(t, a, b)
	makeContacts(t, a, c)
	text := func(s string) *string { return &s }
	var logs syncBuffer
	rows, errs := server.SendBatchLoggedForTest(e.Pool, slog.New(slog.NewTextHandler(&logs, nil)), []db.CreateMessageParams{
		{PeerID: &b.ID, SenderID: a.ID, ClientMsgID: "m1", Body: text("one")},
		{PeerID: &b.ID, SenderID: a.ID, ClientMsgID: "p", Body: text(poisonRaise)},
		{PeerID: &c.ID, SenderID: a.ID, ClientMsgID: "m2", Body: text("two")},
		{PeerID: &a.ID, SenderID: b.ID, ClientMsgID: "m3", Body: text("three")},
		{PeerID: &b.ID, SenderID: a.ID, ClientMsgID: "m1", Body: text("retry of one")},
	})
	for i, want := range []string{"ok", "fails", "ok", "ok", "no row"} {
		var got string
		switch {
		case errs[i] == nil:
			got = "ok"
		case errors.Is(errs[i], pgx.ErrNoRows):
			got = "no row"
		default:
			got = "fails"
		}
		if got != want {
			t.Errorf("message %d: %s (%v), want %s", i, got, errs[i], want)
		}
	}
	if rows[0].Seq != 1 || rows[2].Seq != 1 || rows[3].Seq != 2 {
		t.Errorf("seqs %d, %d, %d; want 1, 1, 2", rows[0].Seq, rows[2].Seq, rows[3].Seq)
	}
	if n := len(e.dbRows(t, "messages", "true")); n != 3 {
		t.Errorf("%d messages stored, want 3", n)
	}
	if l := logs.String(); !strings.Contains(l, "batch=5") || !strings.Contains(l, "poisoned message") {
		t.Errorf("no log of the batch retry with its size and cause in:\n%s", l)
	}
}
