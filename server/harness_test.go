package server_test

// The one test harness for the server: a real PostgreSQL database per test
// (internal/testdb), the real handler behind a real HTTP server speaking
// HTTP/1.1 and h2c, a real push hub, and generated Connect clients.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/internal/password"
	"github.com/karlmalone/karlmalone/internal/testdb"
	"github.com/karlmalone/karlmalone/push"
	"github.com/karlmalone/karlmalone/server"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// env is one running server with its own database.
type env struct {
	URL  string
	Pool *pgxpool.Pool
	Hub  *push.Hub
	// Logs holds everything the server logged, for tests that inspect it.
	Logs *syncBuffer
	// H1 speaks HTTP/1.1 only (as curl does by default); H2C speaks
	// cleartext HTTP/2 only (as gRPC clients do).
	H1, H2C *http.Client
	// AttachmentDir is this server's attachment store (a temporary directory).
	AttachmentDir string
}

type envOption func(*server.Deps)

// withConfig changes the server config (rate limits are off unless set here).
func withConfig(f func(*server.Config)) envOption {
	return func(d *server.Deps) { f(&d.Config) }
}

// withHasher replaces the fast test hasher.
func withHasher(h *password.Hasher) envOption {
	return func(d *server.Deps) { d.Hasher = h }
}

// withPool serves from a caller-made pool (for example on a cluster the test stops).
func withPool(p *pgxpool.Pool) envOption {
	return func(d *server.Deps) { d.Pool = p }
}

// withPushConfig builds the push hub from cfg (say, a small queue) instead
// of the defaults.
func withPushConfig(cfg push.Config) envOption {
	return func(d *server.Deps) { d.Hub = push.NewHub(cfg, d.Log) }
}

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := server.DefaultConfig()
	cfg.RegisterPerAddr, cfg.LoginPerAddr, cfg.LoginPerPhone, cfg.SendPerMember = server.RateLimit{}, server.RateLimit{}, server.RateLimit{}, server.RateLimit{}
	cfg.AttachmentDir = t.TempDir() // never the working directory's .data
	d := server.Deps{
		Log:    log,
		Hasher: password.NewHasher(password.InsecureFastParams, 0),
		Config: cfg,
	}
	for _, o := range opts {
		o(&d)
	}
	if d.Pool == nil {
		d.Pool = testdb.New(t)
	}
	if d.Hub == nil {
		d.Hub = push.NewHub(push.Config{}, log)
	}
	h := server.New(d)

	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // close sockets at once
		d.Hub.Shutdown(ctx)
		srv.Close()
	})
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(h2c.CloseIdleConnections)
	return &env{
		URL: srv.URL, Pool: d.Pool, Hub: d.Hub, Logs: logs,
		H1: srv.Client(), H2C: &http.Client{Transport: h2c},
		AttachmentDir: d.Config.AttachmentDir,
	}
}

// client is one signed-in device of a member, with a client per service.
type client struct {
	ID        int64
	Phone     string
	Password  string
	Token     string
	SessionID int64
	Members   karlmalonev1connect.MemberServiceClient
	Contacts  karlmalonev1connect.ContactServiceClient
	Groups    karlmalonev1connect.GroupServiceClient
	Chat      karlmalonev1connect.ChatServiceClient
}

var phoneSeq atomic.Int64

// newPhone returns an E.164 phone no other test in this binary uses.
func newPhone() string { return fmt.Sprintf("+1555%07d", phoneSeq.Add(1)) }

// register creates a member with a fresh phone and signs it in.
func (e *env) register(t testing.TB, nickname string) *client {
	t.Helper()
	phone, pw := newPhone(), "correct horse battery"
	anon := e.clients("", connect.WithProtoJSON())
	_, err := anon.Members.Register(context.Background(), &v1.RegisterRequest{Phone: phone, Password: pw, Nickname: nickname})
	if err != nil {
		t.Fatalf("register %s: %v", nickname, err)
	}
	return e.login(t, phone, pw)
}

// login signs an existing member in as a new device.
func (e *env) login(t testing.TB, phone, pw string) *client {
	t.Helper()
	anon := e.clients("")
	res, err := anon.Members.Login(context.Background(), &v1.LoginRequest{Phone: phone, Password: pw, DeviceName: "test"})
	if err != nil {
		t.Fatalf("login %s: %v", phone, err)
	}
	c := e.clients(res.GetAccessToken())
	c.ID, c.Phone, c.Password, c.SessionID = res.GetMember().GetId(), phone, pw, res.GetSessionId()
	return c
}

// clients builds Connect clients (binary protobuf over HTTP/1.1 by default)
// that send token as a bearer token when it is not empty.
func (e *env) clients(token string, opts ...connect.ClientOption) *client {
	httpClient := e.H1
	if token != "" {
		opts = append(opts, connect.WithInterceptors(bearer(token)))
	}
	return &client{
		Token:    token,
		Members:  karlmalonev1connect.NewMemberServiceClient(httpClient, e.URL, opts...),
		Contacts: karlmalonev1connect.NewContactServiceClient(httpClient, e.URL, opts...),
		Groups:   karlmalonev1connect.NewGroupServiceClient(httpClient, e.URL, opts...),
		Chat:     karlmalonev1connect.NewChatServiceClient(httpClient, e.URL, opts...),
	}
}

// grpcClients are like clients but speak gRPC over h2c.
func (e *env) grpcClients(token string) *client {
	opts := []connect.ClientOption{connect.WithGRPC()}
	if token != "" {
		opts = append(opts, connect.WithInterceptors(bearer(token)))
	}
	return &client{
		Token:    token,
		Members:  karlmalonev1connect.NewMemberServiceClient(e.H2C, e.URL, opts...),
		Contacts: karlmalonev1connect.NewContactServiceClient(e.H2C, e.URL, opts...),
		Groups:   karlmalonev1connect.NewGroupServiceClient(e.H2C, e.URL, opts...),
		Chat:     karlmalonev1connect.NewChatServiceClient(e.H2C, e.URL, opts...),
	}
}

// bearer adds "Authorization: Bearer <token>" to every call.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// wantCode fails the test unless err carries code.
func wantCode(t testing.TB, err error, code connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("got %v (%v), want %v", got, err, code)
	}
}

// syncBuffer is a bytes.Buffer safe for the server's concurrent log writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// events is a device's push socket (GET /v1/push, binary protobuf frames).
type events struct {
	t  testing.TB
	ws *websocket.Conn
}

// connect opens c's push socket. The hub registers a socket before it
// completes the handshake, so every event published after connect returns
// reaches it.
func (e *env) connect(t testing.TB, c *client) *events {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.URL, "http")+"/v1/push", &websocket.DialOptions{
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + c.Token}},
		Subprotocols: []string{push.SubprotocolProto},
	})
	if err != nil {
		t.Fatalf("dial push: %v", err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	return &events{t: t, ws: ws}
}

// next returns the next event, failing the test after 10 s without one.
func (ev *events) next() *v1.Event {
	ev.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, data, err := ev.ws.Read(ctx)
	if err != nil {
		ev.t.Fatalf("read push event: %v", err)
	}
	if typ != websocket.MessageBinary {
		ev.t.Fatalf("push frame type %v, want binary", typ)
	}
	out := &v1.Event{}
	if err := proto.Unmarshal(data, out); err != nil {
		ev.t.Fatalf("decode push event: %v", err)
	}
	return out
}

// nextWhere skips events until one satisfies match.
func (ev *events) nextWhere(match func(*v1.Event) bool) *v1.Event {
	ev.t.Helper()
	for {
		if got := ev.next(); match(got) {
			return got
		}
	}
}

// wantClosed waits for the server to close the socket with code.
func (ev *events) wantClosed(code websocket.StatusCode) {
	ev.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, _, err := ev.ws.Read(ctx)
		if err == nil {
			continue // events still queued before the close
		}
		if got := websocket.CloseStatus(err); got != code {
			ev.t.Fatalf("socket ended with %v (close status %d), want close status %d", err, got, code)
		}
		return
	}
}

// makeContacts makes a and b contacts through the API (a asks, b accepts) and
// returns their conversation id.
func makeContacts(t testing.TB, a, b *client) int64 {
	t.Helper()
	sent, err := a.Contacts.SendFriendRequest(context.Background(), &v1.SendFriendRequestRequest{MemberId: b.ID})
	if err != nil {
		t.Fatalf("SendFriendRequest %d→%d: %v", a.ID, b.ID, err)
	}
	res, err := b.Contacts.RespondFriendRequest(context.Background(), &v1.RespondFriendRequestRequest{RequestId: sent.GetRequest().GetId(), Accept: true})
	if err != nil {
		t.Fatalf("RespondFriendRequest %d: %v", sent.GetRequest().GetId(), err)
	}
	if res.GetContact().GetConversationId() == 0 {
		t.Fatal("accepting a friend request opened no conversation")
	}
	return res.GetContact().GetConversationId()
}

// count runs a query that returns one integer, such as a count(*).
func (e *env) count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := e.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// waitFor polls cond, a state the server reaches on its own with no event to
// wait on (a hub counter, a file removed), for at most 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(time.Millisecond):
		}
	}
}
