package server_test

// The one test harness for the server: a real PostgreSQL database per test
// (internal/testdb), the real handler behind a real HTTP server speaking
// HTTP/1.1 and h2c, a real push hub, and generated Connect clients.
//
// Fixtures are made the way clients make them, through the API: register,
// makeContacts, newGroup, openGroup and the services' own calls. A test then
// sees exactly the rows the server writes, and a fixture cannot drift from
// them. The one exception is bulk: a test that needs thousands of contacts
// calls e.seedContacts, which runs the generated queries (gen/db) that
// Register, SendFriendRequest and RespondFriendRequest run, in their order;
// TestSeedContactsMatchesTheAPI fails when what it makes stops reading the
// same, through every RPC, as what the API makes. A state the API cannot
// produce (a race's outcome, a call caught mid-transaction) is planted with
// the generated query the server itself would run, and the test says why.
// No test writes SQL of its own to make fixtures.
//
// Assertions are on what clients see: responses, pushed events, errors,
// compared whole with wantProto (cmp.Diff with protocmp). Tables are read
// only where no RPC can show the answer, through e.dbRows and e.dbSnapshot:
// that a refused or failed call left nothing behind, or that recalled
// content is gone at rest.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/karlmalone/karlmalone/gen/db"
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
	cfg.RegisterPerAddr, cfg.LoginPerAddr, cfg.LoginPerPhoneAddr, cfg.SendPerMember = server.RateLimit{}, server.RateLimit{}, server.RateLimit{}, server.RateLimit{}
	cfg.PasswordChangePerMember, cfg.PhoneLookupPerMember, cfg.MemberLookupPerMember = server.RateLimit{}, server.RateLimit{}, server.RateLimit{}
	cfg.TypingInterval = 0
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
	Nickname  string
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
	c.Nickname = res.GetMember().GetNickname()
	return c
}

// public is c's profile as other members see it (no phone), with anyTime.
func (c *client) public() *v1.Member {
	return &v1.Member{Id: c.ID, Nickname: c.Nickname, CreatedAt: &timestamppb.Timestamp{}}
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

// wantInvalid fails unless err is InvalidArgument naming field.
func wantInvalid(t testing.TB, err error, field string) {
	t.Helper()
	wantCode(t, err, connect.CodeInvalidArgument)
	if !strings.Contains(err.Error(), field) {
		t.Fatalf("error %q does not name %s", err, field)
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

// events is a device's push socket (GET /v1/push), binary protobuf frames
// unless it asked for JSON text frames (connectJSON), as a browser would.
type events struct {
	t    testing.TB
	ws   *websocket.Conn
	json bool
}

// connect opens c's push socket. The hub registers a socket before it
// completes the handshake, so every event published after connect returns
// reaches it.
func (e *env) connect(t testing.TB, c *client) *events {
	t.Helper()
	ws := pushDial(t, e, c.Token, &websocket.DialOptions{Subprotocols: []string{push.SubprotocolProto}})
	return &events{t: t, ws: ws}
}

// pushDial opens a push socket for token with the given options. The hub
// registers a socket before the handshake completes, so it is registered
// when Dial returns.
func pushDial(t testing.TB, e *env, token string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if opts.HTTPHeader == nil {
		opts.HTTPHeader = http.Header{}
	}
	opts.HTTPHeader.Set("Authorization", "Bearer "+token)
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.URL, "http")+"/v1/push", opts)
	if err != nil {
		t.Fatalf("dial push: %v", err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	return ws
}

// next returns the next event, failing the test after 10 s without one.
func (ev *events) next() *v1.Event {
	ev.t.Helper()
	got, _ := ev.nextRaw()
	return got
}

// nextRaw is next with the frame as it came.
func (ev *events) nextRaw() (*v1.Event, []byte) {
	ev.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, data, err := ev.ws.Read(ctx)
	if err != nil {
		ev.t.Fatalf("read push event: %v", err)
	}
	out := &v1.Event{}
	switch {
	case ev.json && typ == websocket.MessageText:
		err = protojson.Unmarshal(data, out)
	case !ev.json && typ == websocket.MessageBinary:
		err = proto.Unmarshal(data, out)
	default:
		ev.t.Fatalf("push frame of type %v on a socket that asked for JSON %v", typ, ev.json)
	}
	if err != nil {
		ev.t.Fatalf("decode push event %q: %v", data, err)
	}
	return out, data
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

// contactsOf lists every contact of c, in member id order.
func contactsOf(t testing.TB, c *client) []*v1.Contact {
	t.Helper()
	var out []*v1.Contact
	for _, page := range pages(t, func(token string) (*v1.ListContactsResponse, error) {
		return c.Contacts.ListContacts(context.Background(), &v1.ListContactsRequest{PageSize: 100, PageToken: token})
	}) {
		out = append(out, page.GetContacts()...)
	}
	return out
}

// contactIDs lists the member ids of c's contacts, in order.
func contactIDs(t testing.TB, c *client) []int64 {
	t.Helper()
	var ids []int64
	for _, ct := range contactsOf(t, c) {
		ids = append(ids, ct.GetMember().GetId())
	}
	return ids
}

// newGroup creates an invite-only group named "group" of owner and members,
// first making each member the owner's contact (as CreateGroup requires)
// unless it is already.
func newGroup(t testing.TB, owner *client, members ...*client) *v1.Group {
	t.Helper()
	known := contactIDs(t, owner)
	ids := make([]int64, len(members))
	for i, m := range members {
		if !slices.Contains(known, m.ID) {
			makeContacts(t, owner, m)
		}
		ids[i] = m.ID
	}
	res, err := owner.Groups.CreateGroup(context.Background(), &v1.CreateGroupRequest{Name: "group", MemberIds: ids})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	return res.GetGroup()
}

// openGroup creates an open group named "open" that members join themselves
// (no friendships needed, so it scales to large groups).
func openGroup(t testing.TB, owner *client, members ...*client) *v1.Group {
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

// pages calls list with each next_page_token in turn, from the first page to
// the last, and returns the pages.
func pages[Res interface{ GetNextPageToken() string }](t testing.TB, list func(token string) (Res, error)) []Res {
	t.Helper()
	var out []Res
	for token := ""; ; {
		res, err := list(token)
		if err != nil {
			t.Fatalf("page %d: %v", len(out)+1, err)
		}
		out = append(out, res)
		if token = res.GetNextPageToken(); token == "" {
			return out
		}
		if len(out) > 100_000 {
			t.Fatal("paging does not end")
		}
	}
}

// call binds a request to a client method, for tables of calls whose answer
// is the error alone.
func call[Req, Res any](method func(context.Context, *Req) (*Res, error), req *Req) func() error {
	return func() error {
		_, err := method(context.Background(), req)
		return err
	}
}

// step runs one named step of a scripted test. The steps that follow build
// on it, so a failed step ends the test.
func step(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}

// wantProto fails the test unless got equals want, protobuf messages compared
// field by field (opts ignore what the test cannot know, such as new ids).
func wantProto(t testing.TB, what string, want, got any, opts ...cmp.Option) {
	t.Helper()
	if d := cmp.Diff(want, got, append(opts, protocmp.Transform())...); d != "" {
		t.Fatalf("%s (-want +got):\n%s", what, d)
	}
}

// wantFields fails unless got, a decoded JSON object, has each of want's
// fields with its value (the wire spelling: ids are strings, numbers float64).
func wantFields(t testing.TB, what string, want, got map[string]any) {
	t.Helper()
	picked := map[string]any{}
	for k := range want {
		if v, ok := got[k]; ok {
			picked[k] = v
		}
	}
	if d := cmp.Diff(want, picked); d != "" {
		t.Fatalf("%s (-want +got):\n%s\nall of it: %v", what, d, got)
	}
}

// anyTime makes a set Timestamp equal any other set one; a missing one is
// still a difference. In a want message, &timestamppb.Timestamp{} means "set".
var anyTime = protocmp.FilterMessage(&timestamppb.Timestamp{}, cmp.Comparer(func(a, b protocmp.Message) bool { return true }))

// set stands for a timestamp the server fills in, in a want message.
var set = &timestamppb.Timestamp{}

// postJSON is curl: a raw JSON POST over HTTP/1.1 to a Connect procedure.
func (e *env) postJSON(t testing.TB, procedure, token, body string) (int, map[string]any, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.URL+procedure, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := e.H1.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", procedure, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read %s: %v", procedure, err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s answered %d with non-JSON %q", procedure, res.StatusCode, raw)
	}
	return res.StatusCode, out, string(raw)
}

// dbRows returns table's rows that match where (SQL over the table's
// columns, with $1… for args) as JSON text, in a stable order. It is for
// what no RPC can show: that a refused or failed call left nothing behind
// (compare before and after, or count), or that content is gone at rest.
func (e *env) dbRows(t testing.TB, table, where string, args ...any) []string {
	t.Helper()
	rows, err := e.Pool.Query(context.Background(),
		`SELECT row_to_json(r)::text FROM `+pgx.Identifier{table}.Sanitize()+` r WHERE `+where+` ORDER BY 1`, args...)
	if err != nil {
		t.Fatalf("rows of %s: %v", table, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("rows of %s: %v", table, err)
	}
	return out
}

// snapshot is every row of some tables at one moment (e.dbSnapshot).
type snapshot struct {
	e      *env
	tables []string
	rows   string
}

// dbSnapshot takes a snapshot of the tables, for "nothing changed" checks.
func (e *env) dbSnapshot(t testing.TB, tables ...string) snapshot {
	t.Helper()
	var b strings.Builder
	for _, table := range tables {
		for _, r := range e.dbRows(t, table, "true") {
			fmt.Fprintf(&b, "%s %s\n", table, r)
		}
	}
	return snapshot{e: e, tables: tables, rows: b.String()}
}

// wantUnchanged fails unless the tables hold what they held at the snapshot.
func (s snapshot) wantUnchanged(t testing.TB, what string) {
	t.Helper()
	if now := s.e.dbSnapshot(t, s.tables...); now.rows != s.rows {
		t.Fatalf("%s changed the database:\nbefore:\n%s\nafter:\n%s", what, s.rows, now.rows)
	}
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

// seedPassword signs in any member seedContacts made.
const seedPassword = "seeded horse battery"

// seeded is a member seedContacts made, not signed in (e.login signs it in).
type seeded struct {
	ID    int64
	Phone string
}

// seedContacts makes n new members, nicknamed prefix0 … prefix(n-1), each a
// contact of owner as if it had asked owner and owner had accepted, and
// returns them in id order. It is for tests that need thousands of contacts:
// through the API under -race a contact costs about 13 ms of CPU, through
// this about 0.3 ms. It writes what Register, SendFriendRequest and
// RespondFriendRequest write, through the same generated queries in the same
// order, pipelined (TestSeedContactsMatchesTheAPI checks the result).
func (e *env) seedContacts(t testing.TB, owner *client, prefix string, n int) []seeded {
	t.Helper()
	ctx := context.Background()
	hash, err := password.NewHasher(password.InsecureFastParams, 0).Hash(ctx, seedPassword)
	if err != nil {
		t.Fatal(err)
	}
	// As ContactService stores them: a request's status is the API's enum
	// number, and the members of a direct conversation have no group role.
	const (
		accepted   = int16(v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_ACCEPTED)
		directRole = int16(v1.GroupRole_GROUP_ROLE_UNSPECIFIED)
	)
	out := make([]seeded, 0, n)
	// A transaction holds an advisory lock per pair (LockContactPair) until
	// it ends: chunks keep that far below the cluster's lock table.
	const chunk = 500
	for first := 0; first < n; first += chunk {
		members := make([]seeded, min(chunk, n-first))
		requests, convs := make([]int64, len(members)), make([]int64, len(members))
		err := pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
			// Register.
			err := pipeline(ctx, tx, func(q *db.Queries, b *pgx.Batch) {
				for i := range members {
					members[i].Phone = newPhone()
					q.CreateMember(ctx, db.CreateMemberParams{Phone: members[i].Phone, PasswordHash: hash, Nickname: fmt.Sprint(prefix, first+i)})
					returningID(b, &members[i].ID)
				}
			})
			if err != nil {
				return fmt.Errorf("register: %w", err)
			}
			// SendFriendRequest from the new member to owner.
			err = pipeline(ctx, tx, func(q *db.Queries, b *pgx.Batch) {
				for i, m := range members {
					q.CreateFriendRequest(ctx, db.CreateFriendRequestParams{FromMemberID: m.ID, ToMemberID: owner.ID})
					returningID(b, &requests[i])
				}
			})
			if err != nil {
				return fmt.Errorf("send request: %w", err)
			}
			// RespondFriendRequest by owner, accepting: the pair's lock, then
			// acceptRequest's writes.
			err = pipeline(ctx, tx, func(q *db.Queries, b *pgx.Batch) {
				for i, m := range members {
					q.LockContactPair(ctx, db.LockContactPairParams{A: m.ID, B: owner.ID})
					q.UpdateFriendRequestStatus(ctx, db.UpdateFriendRequestStatusParams{Status: accepted, ID: requests[i], ToMemberID: owner.ID})
					q.ResolvePendingFriendRequestsBetween(ctx, db.ResolvePendingFriendRequestsBetweenParams{Status: accepted, A: m.ID, B: owner.ID})
					q.UpsertDirectConversation(ctx, db.UpsertDirectConversationParams{A: m.ID, B: owner.ID})
					returningID(b, &convs[i])
				}
			})
			if err != nil {
				return fmt.Errorf("accept: %w", err)
			}
			err = pipeline(ctx, tx, func(q *db.Queries, b *pgx.Batch) {
				for i, m := range members {
					for _, id := range []int64{m.ID, owner.ID} {
						q.AddConversationMember(ctx, db.AddConversationMemberParams{ConversationID: convs[i], MemberID: id, Role: directRole})
					}
					q.CreateContactPair(ctx, db.CreateContactPairParams{A: owner.ID, B: m.ID, ConversationID: convs[i]})
				}
			})
			if err != nil {
				return fmt.Errorf("accept: %w", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("seed contacts: %v", err)
		}
		out = append(out, members...)
	}
	return out
}

// pipeline sends the generated queries that queue calls, in order, in one
// round trip on tx. The calls return nothing; returningID reads a result.
func pipeline(ctx context.Context, tx pgx.Tx, queue func(q *db.Queries, b *pgx.Batch)) error {
	b := &pgx.Batch{}
	queue(db.New(queuer{b}), b)
	return tx.SendBatch(ctx, b).Close()
}

// returningID stores the id column that b's last statement returns in dst,
// once the batch has run.
func returningID(b *pgx.Batch, dst *int64) {
	b.QueuedQueries[len(b.QueuedQueries)-1].Query(func(rows pgx.Rows) error {
		// Scan into dst alone: a nil destination skips its column.
		dsts := make([]any, len(rows.FieldDescriptions()))
		for i, f := range rows.FieldDescriptions() {
			if f.Name == "id" {
				dsts[i] = dst
			}
		}
		if !slices.Contains(dsts, any(dst)) {
			return errors.New("the statement returns no id")
		}
		if !rows.Next() {
			return fmt.Errorf("no row returned: %w", rows.Err())
		}
		return rows.Scan(dsts...)
	})
}

// queuer is a db.DBTX that runs nothing: each generated query called on it
// joins the batch instead.
type queuer struct{ b *pgx.Batch }

var errQueued = errors.New("queued, not run yet")

func (q queuer) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	q.b.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

func (q queuer) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	q.b.Queue(sql, args...)
	return nil, errQueued
}

func (q queuer) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	q.b.Queue(sql, args...)
	return queuedRow{}
}

func (q queuer) SendBatch(context.Context, *pgx.Batch) pgx.BatchResults {
	panic("queuer: a batch within a batch")
}

// queuedRow is the row of a query not run yet: there is nothing to scan.
type queuedRow struct{}

func (queuedRow) Scan(...any) error { return errQueued }

// sameMessage reports whether got is the message want: what a pushed copy
// and the stored one must agree on.
func sameMessage(got, want *v1.Message) bool {
	return got != nil && cmp.Equal(want, got, protocmp.Transform())
}
