package server_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/karlmalone/karlmalone/gen/db"
	"github.com/karlmalone/karlmalone/server"
)

// TestSendBatchIsolatesFailures: one bad message in a batch rolls the batch's
// transaction back, and the pipeline then stores every other message on its
// own: each caller gets its own result, and no seq is lost.
func TestSendBatchIsolatesFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := e.register(t, "a"), e.register(t, "b"), e.register(t, "c")
	makeContacts(t, a, b)
	makeContacts(t, a, c)
	text := func(s string) *string { return &s }
	missingAttachment, kind := int64(1<<40), int16(1)
	rows, errs := server.SendBatchForTest(e.Pool, []db.CreateMessageParams{
		{PeerID: &b.ID, SenderID: a.ID, ClientMsgID: "m1", Body: text("one")},
		{PeerID: &b.ID, SenderID: a.ID, ClientMsgID: "m1", Body: text("retry of one")},   // taken key: no row
		{PeerID: &c.ID, SenderID: b.ID, ClientMsgID: "x", Body: text("not b's contact")}, // not allowed: no row
		{PeerID: &c.ID, SenderID: a.ID, ClientMsgID: "bad", AttachmentID: &missingAttachment, AttachmentKind: &kind, Caption: text("")},
		{PeerID: &c.ID, SenderID: a.ID, ClientMsgID: "m2", Body: text("two")},
		{PeerID: &a.ID, SenderID: b.ID, ClientMsgID: "m3", Body: text("three")},
	})
	for i, want := range []error{nil, pgx.ErrNoRows, pgx.ErrNoRows, errors.New("fk"), nil, nil} {
		switch {
		case want == nil && errs[i] != nil:
			t.Fatalf("message %d: %v", i, errs[i])
		case want == pgx.ErrNoRows && !errors.Is(errs[i], pgx.ErrNoRows):
			t.Fatalf("message %d: got %v, want no row", i, errs[i])
		case want != nil && want != pgx.ErrNoRows && (errs[i] == nil || errors.Is(errs[i], pgx.ErrNoRows)):
			t.Fatalf("message %d: got %v, want a foreign-key error", i, errs[i])
		}
	}
	if seqs := []int64{rows[0].Seq, rows[4].Seq, rows[5].Seq}; !slices.Equal(seqs, []int64{1, 1, 2}) {
		t.Fatalf("seqs of the stored messages %v, want [1 1 2]", seqs)
	}
	if rows := e.dbRows(t, "messages", "true"); len(rows) != 3 {
		t.Fatalf("%d messages stored, want 3: %v", len(rows), rows)
	}
}
