package store_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/karlmalone/karlmalone/gen/db"
	"github.com/karlmalone/karlmalone/internal/testdb"
	"github.com/karlmalone/karlmalone/store"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// TestErrorsTranslated: what the generated queries return through the store
// is in the store's words, on every path a query takes (one row, many rows,
// a batch, a transaction), and still wraps the driver's error for logs.
func TestErrorsTranslated(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := store.New(testdb.New(t))
	q := st.Queries()
	member := func(phone string) (db.Member, error) {
		return q.CreateMember(ctx, db.CreateMemberParams{Phone: phone, PasswordHash: "x", Nickname: "n"})
	}
	ann, err := member("+15550001")
	if err != nil {
		t.Fatal(err)
	}
	conv, err := q.CreateGroupConversation(ctx)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		err  error
		kind store.Kind
		is   error // a sentinel it must match, if any
	}{
		{"one row, none found", second(q.GetMemberByID(ctx, ann.ID+1000)), store.NotFound, store.ErrNotFound},
		{"unique phone", second(member(ann.Phone)), store.Conflict, store.ErrPhoneTaken},
		{"check", second(q.CreateFriendRequest(ctx, db.CreateFriendRequestParams{FromMemberID: ann.ID, ToMemberID: ann.ID})), store.Invalid, nil},
		{"many rows, foreign key", second(q.CreateGroupMembers(ctx, db.CreateGroupMembersParams{ConversationID: conv.ID, MemberIds: []int64{ann.ID + 1000}})), store.Reference, nil},
		{"in a transaction", st.InTx(ctx, func(q *db.Queries) error {
			_, err := q.GetMemberByID(ctx, ann.ID+1000)
			return err
		}), store.NotFound, store.ErrNotFound},
		{"batch", batchErr(ctx, q, db.CreateMessageParams{PeerID: &ann.ID, SenderID: ann.ID, ClientMsgID: "self"}), store.NotFound, store.ErrNotFound},
	} {
		if got := store.KindOf(tc.err); got != tc.kind {
			t.Errorf("%s: %v is of kind %v, want %v", tc.name, tc.err, got, tc.kind)
		}
		if _, ok := errors.AsType[*store.Error](tc.err); !ok {
			t.Errorf("%s: %T %v not translated at the boundary", tc.name, tc.err, tc.err)
		}
		if tc.is != nil && !errors.Is(tc.err, tc.is) {
			t.Errorf("%s: %v is not %v", tc.name, tc.err, tc.is)
		}
	}
	// A named constraint error matches its own constraint only.
	if err := second(member(ann.Phone)); errors.Is(err, store.ErrRequestPending) || errors.Is(err, store.ErrNotFound) {
		t.Errorf("a phone conflict matches another sentinel: %v", err)
	}
	// The driver's error stays inside, for the send pipeline and for logs.
	if err := second(q.GetMemberByID(ctx, ann.ID+1000)); !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("%v does not wrap pgx.ErrNoRows", err)
	}
	if err := st.Ping(ctx); err != nil {
		t.Errorf("ping: %v", err)
	}
}

func second[T any](_ T, err error) error { return err }

func batchErr(ctx context.Context, q *db.Queries, arg db.CreateMessageParams) error {
	var err error
	q.CreateMessage(ctx, []db.CreateMessageParams{arg}).QueryRow(func(_ int, _ db.CreateMessageRow, e error) { err = e })
	return err
}

// TestKinds is the SQLSTATE table: each code or class the program treats
// specially, and failures to reach the database.
func TestKinds(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return &pgconn.PgError{Code: code} }
	for _, tc := range []struct {
		err  error
		kind store.Kind
	}{
		{pgx.ErrNoRows, store.NotFound},
		{pg("23505"), store.Conflict},
		{pg("23503"), store.Reference},
		{pg("23514"), store.Invalid},
		{pg("22003"), store.Invalid}, // numeric_value_out_of_range
		{pg("22P02"), store.Invalid}, // invalid_text_representation
		{pg("22021"), store.Invalid}, // character_not_in_repertoire: NUL in text
		{pg("22008"), store.Invalid}, // datetime_field_overflow
		{pg("40001"), store.Retry},
		{pg("40P01"), store.Retry},
		{pg("57014"), store.Timeout}, // statement_timeout
		{pg("57P01"), store.Unavailable},
		{pg("08006"), store.Unavailable},
		{pg("53300"), store.Unavailable}, // too_many_connections
		{pg("53100"), store.Unavailable}, // disk_full
		{pg("42P01"), 0},                 // undefined_table: a bug, internal
		{pg("23502"), 0},                 // not_null_violation: a bug, internal
		{io.ErrUnexpectedEOF, store.Unavailable},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, store.Unavailable},
		{errors.New("something else"), 0},
		{nil, 0},
	} {
		if got := store.KindOf(tc.err); got != tc.kind {
			t.Errorf("KindOf(%#v) = %v, want %v", tc.err, got, tc.kind)
		}
	}
}

func TestLikePrefix(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"ann": "ann%", `50%_off\`: `50\%\_off\\%`, "": "%"} {
		if got := store.LikePrefix(in); got != want {
			t.Errorf("LikePrefix(%q) = %q, want %q", in, got, want)
		}
	}
}
