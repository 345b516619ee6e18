package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/internal/testdb"
)

// TestShutdownOrder: on SIGTERM (run's context ending) /readyz answers 503
// at once and for -shutdown-drain, while requests are still served; a send
// in flight when shutdown begins is stored and answered before the server
// stops.
func TestShutdownOrder(t *testing.T) {
	url := testdb.NewURL(t)
	addr, stop, logs := startServer(t, "-database-url", url, "-shutdown-drain", "2s")
	base := "http://" + addr
	ctx := t.Context()
	bearer := func(token string) connect.ClientOption {
		return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("Authorization", "Bearer "+token)
				return next(ctx, req)
			}
		}))
	}
	members := karlmalonev1connect.NewMemberServiceClient(http.DefaultClient, base)
	if _, err := members.Register(ctx, &v1.RegisterRequest{Phone: "+14155550123", Password: "s3cret-pass", Nickname: "Karl"}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	login, err := members.Login(ctx, &v1.LoginRequest{Phone: "+14155550123", Password: "s3cret-pass"})
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	auth := bearer(login.GetAccessToken())
	me := karlmalonev1connect.NewMemberServiceClient(http.DefaultClient, base, auth)
	chat := karlmalonev1connect.NewChatServiceClient(http.DefaultClient, base, auth)
	group, err := karlmalonev1connect.NewGroupServiceClient(http.DefaultClient, base, auth).
		CreateGroup(ctx, &v1.CreateGroupRequest{Name: "notes to self"})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}

	// Hold the send in flight: a transaction of the test's own holds the
	// conversation's row lock, which the send's statement waits for. (SQL
	// in a test to catch a call mid-statement, which the API cannot do.)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	convID := group.GetGroup().GetConversationId()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE`, convID); err != nil {
		t.Fatal(err)
	}
	type sendResult struct {
		res *v1.SendMessageResponse
		err error
	}
	sent := make(chan sendResult, 1)
	go func() {
		res, err := chat.SendMessage(context.Background(), &v1.SendMessageRequest{
			Target:      &v1.SendMessageRequest_GroupId{GroupId: group.GetGroup().GetId()},
			ClientMsgId: "in-flight",
			Content:     &v1.SendMessageRequest_Text{Text: "sent as the server stops"},
		})
		sent <- sendResult{res, err}
	}()
	waitUntil(t, "the send to wait on the row lock", func() bool {
		var n int
		pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&n)
		return n > 0
	})

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	waitUntil(t, "/readyz to answer 503", func() bool {
		res, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatalf("/readyz during the drain: %v", err)
		}
		res.Body.Close()
		return res.StatusCode == http.StatusServiceUnavailable
	})
	if _, err := me.GetMe(ctx, &v1.GetMeRequest{}); err != nil {
		t.Fatalf("GetMe while not ready: %v", err)
	}
	select {
	case r := <-sent:
		t.Fatalf("the send was answered while its statement waited: %v %v", r.res, r.err)
	default:
	}

	tx.Rollback(ctx) // the send goes on
	r := <-sent
	if r.err != nil || r.res.GetMessage().GetSeq() != 1 {
		t.Fatalf("the send in flight at shutdown: %v, %v; want seq 1", r.res, r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("run returned %v\n%s", err, logs)
	}
	var stored int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM messages WHERE conversation_id = $1 AND client_msg_id = 'in-flight'`, convID).Scan(&stored); err != nil || stored != 1 {
		t.Fatalf("%d messages stored (%v), want the one in flight", stored, err)
	}
}

// waitUntil polls cond, a state the server reaches with no event to wait
// on, for at most 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(5 * time.Millisecond)
	}
}
