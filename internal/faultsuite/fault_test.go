package faultsuite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/internal/natstest"
	"github.com/karlmalone/karlmalone/internal/pgcluster"
	"github.com/karlmalone/karlmalone/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// The size of each burst: three direct conversations with one sender each and
// a group with three senders, every sender sending perSender messages one
// after another (300 in all); the fault strikes after faultAfter of them are
// acknowledged.
const (
	perSender  = 50
	faultAfter = 120
)

// TestFaultSuite builds the server once and runs each fault against a server
// (or a cluster) and a database of its own, all in parallel.
func TestFaultSuite(t *testing.T) {
	bin := buildServer(t)

	// kill -9 of the server mid-burst, then a new process on the same port
	// and database: whatever was acknowledged was committed, whatever was in
	// flight is retried by its sender under the same client_msg_id.
	t.Run("KillServer", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, bin, testdb.NewURL(t))
		runBurst(t, []*server{srv}, "", true, func() {
			srv.kill()
			srv.start()
		})
	})

	// Three nodes on one database joined by a real NATS server, members
	// spread over them so that every conversation crosses nodes; kill -9 of
	// one node mid-burst, which stays dead. Its senders and listeners move to
	// the next node on the connection error (a client that knows every
	// node), the listeners resync, and all converge as above. The surviving
	// nodes must go on pushing to each other's sockets through NATS: a
	// listener that failed over gets, live, messages acknowledged by the
	// other survivor.
	t.Run("KillNode", func(t *testing.T) {
		t.Parallel()
		nats, url := natstest.New(t), testdb.NewURL(t)
		var nodes []*server
		for i := range 3 {
			nodes = append(nodes, startServer(t, bin, url, "-nats-url", nats.URL, "-node-name", fmt.Sprint("node", i)))
		}
		dead := nodes[2]
		b := runBurst(t, nodes, "", true, dead.kill)
		failedOver := 0
		for _, c := range b.convs {
			on, cross := b.listeners[c].crossPushes(b.ackedVia, dead.addr)
			t.Logf("conversation %s: listener's sockets on %v, %d messages pushed live from the other surviving node", c.name, on, cross)
			if on[0] != dead.addr {
				continue
			}
			failedOver++
			if slices.Contains(on[1:], dead.addr) || len(on) < 2 {
				t.Errorf("conversation %s: the listener did not leave the dead node: sockets on %v", c.name, on)
			}
			if cross == 0 {
				t.Errorf("conversation %s: the listener moved from the dead node but got no message, live, from the other survivor", c.name)
			}
		}
		if failedOver == 0 {
			t.Errorf("no listener was on the killed node: the burst proves nothing about failing over")
		}
	})

	// PostgreSQL stopped ("fast": open transactions roll back, connections
	// break) and started again mid-burst, on a private cluster so that no
	// other test loses its database. The server stays up and answers
	// unavailable meanwhile; senders retry.
	t.Run("RestartPostgres", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		cluster, err := pgcluster.Start(ctx, pgcluster.Options{Dir: t.TempDir(), Fast: true})
		if err != nil {
			t.Fatalf("start a private PostgreSQL: %v", err)
		}
		t.Cleanup(func() { cluster.Stop() })
		url := cluster.URL("postgres")
		srv := startServer(t, bin, url)
		runBurst(t, []*server{srv}, "", true, func() {
			if err := cluster.Stop(); err != nil {
				t.Errorf("stop PostgreSQL: %v", err)
				return
			}
			again, err := pgcluster.Start(ctx, pgcluster.Options{Dir: cluster.Dir(), Fast: true})
			if err != nil {
				t.Errorf("start PostgreSQL again: %v", err)
				return
			}
			if again.URL("postgres") != url {
				t.Errorf("PostgreSQL came back at %s, not %s", again.URL("postgres"), url)
			}
		})
	})

	// The commit of the batch holding one message fails (every statement
	// succeeded): that message must be refused and stored nowhere, every other
	// message of its batch stored once and acknowledged.
	t.Run("CommitFails", func(t *testing.T) {
		t.Parallel()
		url := testdb.NewURL(t)
		poisonCommit(t, url, poisoned)
		srv := startServer(t, bin, url)
		runBurst(t, []*server{srv}, poisoned, false, func() {})
	})
}

// poisoned is the client_msg_id whose commit CommitFails makes fail: a
// message of the group, sent while the burst is at its busiest.
const poisoned = "g1-25"

// poisonCommit makes COMMIT fail for any transaction that stored a message
// with this client_msg_id, through a deferred constraint trigger. It is SQL in
// a test because it injects a fault no client can cause: every statement
// succeeds and only the commit fails, as it would on a serialization failure
// or a deferred constraint.
func poisonCommit(t *testing.T, dbURL, clientMsgID string) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect to plant the poison: %v", err)
	}
	defer conn.Close(ctx)
	for _, sql := range []string{
		`CREATE FUNCTION faultsuite_poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.client_msg_id = '` + clientMsgID + `' THEN
				RAISE EXCEPTION 'faultsuite: poisoned commit';
			END IF;
			RETURN NULL;
		END $$`,
		`CREATE CONSTRAINT TRIGGER faultsuite_poison AFTER INSERT ON messages
			DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION faultsuite_poison()`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("plant the poison: %v", err)
		}
	}
}

// buildServer builds cmd/karlmalone (without -race: the suite tests the
// program, and a race build would only slow the burst down) into a
// directory that lives as long as the suite.
func buildServer(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "karlmalone")
	cmd := exec.Command("go", "build", "-o", out, "github.com/karlmalone/karlmalone/cmd/karlmalone")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/karlmalone: %v\n%s", err, b)
	}
	return out
}

// server is the karlmalone binary running as a child process, restartable
// on the same port and database.
type server struct {
	t       *testing.T
	bin     string
	addr    string // host:port, the same across restarts
	dbURL   string
	dataDir string
	args    []string // more flags, e.g. to join a cluster
	// logs is every run's output, shown when the test fails. Only the
	// running process's reader goroutine writes it; it is read only once
	// that process has exited (exited is closed after the reader is done).
	logs strings.Builder

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
}

func startServer(t *testing.T, bin, dbURL string, args ...string) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &server{t: t, bin: bin, addr: addr, dbURL: dbURL, dataDir: t.TempDir(), args: args}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("server output:\n%s", s.logs.String())
		}
	})
	s.start()
	return s
}

// start runs the binary and returns once it logs that it is serving.
func (s *server) start() {
	s.t.Helper()
	// No drain period on SIGTERM: no load balancer here to see /readyz.
	cmd := exec.Command(s.bin, append([]string{"serve", "-listen", s.addr, "-insecure-fast-password-hash", "-send-rate", "0", "-shutdown-drain", "0"}, s.args...)...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+s.dbURL, "KARLMALONE_ATTACHMENT_DIR="+s.dataDir)
	out, in, err := os.Pipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = in, in
	err = cmd.Start()
	in.Close() // the child has its own copy: EOF comes when it exits
	if err != nil {
		out.Close()
		s.t.Fatalf("start the server: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	serving := make(chan struct{})
	go func() {
		defer close(s.exited)
		defer out.Close()
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			s.logs.WriteString(line + "\n")
			if strings.Contains(line, "msg=serving") {
				once.Do(func() { close(serving) })
			}
		}
		cmd.Wait()
	}()
	select {
	case <-serving:
	case <-s.exited:
		s.t.Fatalf("the server exited before serving: %v", cmd.ProcessState)
	case <-time.After(time.Minute):
		s.kill()
		s.t.Fatal("the server did not serve within a minute")
	}
}

// kill is kill -9: no shutdown, no drain, sockets cut by the kernel.
func (s *server) kill() {
	s.cmd.Process.Kill()
	<-s.exited
	s.logs.WriteString("----- faultsuite: kill -9 -----\n")
}

// stop ends the server with SIGTERM, as an orchestrator would.
func (s *server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

func (s *server) url() string { return "http://" + s.addr }

// member is one signed-in device.
type member struct {
	id       int64
	token    string
	node     *failover // every connection it opens, RPC or socket, goes there
	http     *http.Client
	chat     karlmalonev1connect.ChatServiceClient
	contacts karlmalonev1connect.ContactServiceClient
	groups   karlmalonev1connect.GroupServiceClient
}

var phoneSeq atomic.Int64

// failover is a client that knows every node: it connects to the node it
// last reached and, when that refuses the connection, to the next one in
// turn, keeping to whichever answered.
type failover struct {
	mu    sync.Mutex
	addrs []string
	cur   int
}

// dial ignores the address asked for: the URL names the home node only.
func (f *failover) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	f.mu.Lock()
	start := f.cur
	f.mu.Unlock()
	var errs []error
	for i := range f.addrs {
		k := (start + i) % len(f.addrs)
		c, err := d.DialContext(ctx, network, f.addrs[k])
		if err == nil {
			f.mu.Lock()
			f.cur = k
			f.mu.Unlock()
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// addr is the node it last reached.
func (f *failover) addr() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addrs[f.cur]
}

// register signs up a member through the API and signs it in; its home is
// nodes[home], the others, in order after it, are where it fails over to.
func register(t *testing.T, nodes []*server, home int, name string) *member {
	t.Helper()
	ctx := t.Context()
	node := &failover{}
	for i := range nodes {
		node.addrs = append(node.addrs, nodes[(home+i)%len(nodes)].addr)
	}
	// One transport per member, so a killed server breaks only the
	// connections each member really had.
	hc := &http.Client{Transport: &http.Transport{DialContext: node.dial}}
	t.Cleanup(hc.CloseIdleConnections)
	base := nodes[home%len(nodes)].url()
	phone := fmt.Sprintf("+1666%07d", phoneSeq.Add(1))
	anon := karlmalonev1connect.NewMemberServiceClient(hc, base)
	if _, err := anon.Register(ctx, &v1.RegisterRequest{Phone: phone, Password: "correct horse battery", Nickname: name}); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	res, err := anon.Login(ctx, &v1.LoginRequest{Phone: phone, Password: "correct horse battery", DeviceName: "faultsuite"})
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	token := res.GetAccessToken()
	auth := connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}))
	return &member{
		id: res.GetMember().GetId(), token: token, node: node, http: hc,
		chat:     karlmalonev1connect.NewChatServiceClient(hc, base, auth),
		contacts: karlmalonev1connect.NewContactServiceClient(hc, base, auth),
		groups:   karlmalonev1connect.NewGroupServiceClient(hc, base, auth),
	}
}

// befriend makes a and b contacts and returns their conversation.
func befriend(t *testing.T, a, b *member) int64 {
	t.Helper()
	sent, err := a.contacts.SendFriendRequest(t.Context(), &v1.SendFriendRequestRequest{MemberId: b.id})
	if err != nil {
		t.Fatalf("SendFriendRequest: %v", err)
	}
	res, err := b.contacts.RespondFriendRequest(t.Context(), &v1.RespondFriendRequestRequest{RequestId: sent.GetRequest().GetId(), Accept: true})
	if err != nil {
		t.Fatalf("RespondFriendRequest: %v", err)
	}
	return res.GetContact().GetConversationId()
}

// conversation is one conversation of the burst: who sends into it, how a
// request names it, and who only listens.
type conversation struct {
	id       int64
	name     string // prefix of its client_msg_ids
	senders  []*member
	target   func(*v1.SendMessageRequest)
	listener *member
}

// fixtures makes three direct conversations (a sender and a listener each)
// and a group of three senders and a listener. Members take the nodes in
// turn as their homes: on three nodes, the two ends of every direct
// conversation and the group's senders are on different nodes.
func fixtures(t *testing.T, nodes []*server) []*conversation {
	t.Helper()
	homes := 0
	reg := func(name string) *member {
		homes++
		return register(t, nodes, homes-1, name)
	}
	var convs []*conversation
	for i := range 3 {
		a, b := reg(fmt.Sprint("a", i)), reg(fmt.Sprint("b", i))
		convs = append(convs, &conversation{
			id: befriend(t, a, b), name: fmt.Sprint("d", i), senders: []*member{a}, listener: b,
			target: func(r *v1.SendMessageRequest) { r.Target = &v1.SendMessageRequest_PeerId{PeerId: b.id} },
		})
	}
	owner := reg("owner")
	others := []*member{reg("g1"), reg("g2"), reg("listener")}
	var ids []int64
	for _, m := range others {
		befriend(t, owner, m)
		ids = append(ids, m.id)
	}
	g, err := owner.groups.CreateGroup(t.Context(), &v1.CreateGroupRequest{Name: "burst", MemberIds: ids})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	groupID := g.GetGroup().GetId()
	return append(convs, &conversation{
		id: g.GetGroup().GetConversationId(), name: "g", senders: []*member{owner, others[0], others[1]}, listener: others[2],
		target: func(r *v1.SendMessageRequest) { r.Target = &v1.SendMessageRequest_GroupId{GroupId: groupID} },
	})
}

// runBurst sends the burst with fault injected once faultAfter messages are
// acknowledged, then proves every conversation whole: each acknowledged
// message stored exactly once under the seq it was acknowledged with, no
// gap, nothing stored that was not acknowledged, and every listener's view
// (push plus the documented resync) equal to history. A non-empty poison
// is a client_msg_id whose send must fail and store nothing; mustRetry says
// that the fault must have made some sender retry. Members are spread over
// nodes (see fixtures).
func runBurst(t *testing.T, nodes []*server, poison string, mustRetry bool, fault func()) *burst {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	convs := fixtures(t, nodes)

	// Listeners first, each synced once, so they see the fault live.
	lctx, stopListeners := context.WithCancel(ctx)
	var listening sync.WaitGroup
	listeners := map[*conversation]*listener{}
	for _, c := range convs {
		l := newListener(c.listener)
		listeners[c] = l
		synced := make(chan struct{})
		listening.Go(func() { l.run(lctx, synced) })
		select {
		case <-synced:
		case <-ctx.Done():
			t.Fatal("a listener never synced")
		}
	}
	defer func() { stopListeners(); listening.Wait() }()

	type outcome struct {
		msg *v1.Message
		err error
		via string // the node that acknowledged it
	}
	var (
		mu       sync.Mutex
		outcomes = map[string]outcome{} // by client_msg_id, unique across the burst
		acks     atomic.Int64
		retries  atomic.Int64 // sends tried again after an error
		midway   = make(chan struct{})
		senders  sync.WaitGroup
	)
	for _, c := range convs {
		for si, from := range c.senders {
			senders.Go(func() {
				for i := range perSender {
					id := fmt.Sprintf("%s%d-%d", c.name, si, i)
					req := &v1.SendMessageRequest{ClientMsgId: id, Content: &v1.SendMessageRequest_Text{Text: "burst " + id}}
					c.target(req)
					msg, err := sendWithRetries(ctx, from, req, id == poison, &retries)
					mu.Lock()
					outcomes[id] = outcome{msg, err, from.node.addr()}
					mu.Unlock()
					if err == nil && acks.Add(1) == faultAfter {
						close(midway)
					}
				}
			})
		}
	}
	select {
	case <-midway:
		fault()
	case <-ctx.Done():
		t.Fatal("the burst stalled before the fault")
	}
	senders.Wait()

	b := &burst{convs: convs, listeners: listeners, ackedVia: map[string]string{}}
	acked := map[int64]map[string]*v1.Message{} // conversation → client_msg_id → the answer
	for _, c := range convs {
		acked[c.id] = map[string]*v1.Message{}
	}
	for _, c := range convs {
		for si := range c.senders {
			for i := range perSender {
				id := fmt.Sprintf("%s%d-%d", c.name, si, i)
				o := outcomes[id]
				switch {
				case id == poison && o.err == nil:
					t.Errorf("%s: the send whose commit failed was acknowledged (seq %d)", id, o.msg.GetSeq())
				case id != poison && o.err != nil:
					t.Errorf("%s: %v (code %v)", id, o.err, connect.CodeOf(o.err))
				case o.err == nil:
					acked[c.id][id] = o.msg
					b.ackedVia[id] = o.via
				}
			}
		}
	}
	if poison != "" {
		if _, ok := outcomes[poison]; !ok {
			t.Fatalf("no message %s in the burst", poison)
		}
	}
	t.Logf("%d acknowledged, %d retries, the fault after %d", acks.Load(), retries.Load(), faultAfter)
	if mustRetry && retries.Load() == 0 {
		t.Errorf("no send met the fault: the burst proves nothing about it")
	}

	for _, c := range convs {
		history, err := readHistory(ctx, c.listener, c.id)
		if err != nil {
			t.Fatalf("conversation %s: read history: %v", c.name, err)
		}
		stored := map[string]*v1.Message{}
		for i, m := range history {
			if m.GetSeq() != int64(i+1) {
				t.Errorf("conversation %s: seq %d at place %d: a gap", c.name, m.GetSeq(), i+1)
			}
			if stored[m.GetClientMsgId()] != nil {
				t.Errorf("conversation %s: %s stored twice", c.name, m.GetClientMsgId())
			}
			stored[m.GetClientMsgId()] = m
			if acked[c.id][m.GetClientMsgId()] == nil {
				t.Errorf("conversation %s: %s (seq %d) is stored but was never acknowledged", c.name, m.GetClientMsgId(), m.GetSeq())
			}
		}
		for id, m := range acked[c.id] {
			if s := stored[id]; s == nil || !sameMessage(s, m) {
				t.Errorf("conversation %s: acknowledged %s (seq %d) is stored as %v", c.name, id, m.GetSeq(), s)
			}
		}

		l := listeners[c]
		if err := l.waitFor(ctx, c.id, int64(len(history))); err != nil {
			t.Errorf("conversation %s: the listener did not converge: %v", c.name, err)
			continue
		}
		got, problems, sessions := l.view(c.id)
		for _, p := range problems {
			t.Errorf("conversation %s: listener: %s", c.name, p)
		}
		if len(got) != len(history) {
			t.Errorf("conversation %s: the listener has %d messages, history %d", c.name, len(got), len(history))
		}
		for i := range min(len(got), len(history)) {
			if !sameMessage(got[i], history[i]) {
				t.Errorf("conversation %s: the listener's message %d is %v, history's %v", c.name, i+1, got[i], history[i])
			}
		}
		t.Logf("conversation %s: %d messages, listener connected %d times", c.name, len(history), sessions)
	}
	return b
}

// burst is what a scenario may check beyond runBurst's invariants.
type burst struct {
	convs     []*conversation
	listeners map[*conversation]*listener
	ackedVia  map[string]string // client_msg_id → the node that acknowledged it
}

// sendWithRetries sends req until it is answered, retrying under the same
// client_msg_id on the errors that say "maybe later": the server or the
// database gone for a moment, or an answer lost on the way back. A poisoned
// message is sent once: its failure is the point.
func sendWithRetries(ctx context.Context, from *member, req *v1.SendMessageRequest, poisoned bool, retries *atomic.Int64) (*v1.Message, error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := from.chat.SendMessage(actx, req)
		cancel()
		if err == nil {
			return res.GetMessage(), nil
		}
		if poisoned || !retryable(err) || ctx.Err() != nil {
			return nil, err
		}
		retries.Add(1)
		backoff(ctx, attempt)
	}
}

// retryable: the server's unavailable and aborted, a call that timed out,
// and a broken connection, which the Connect client reports as unavailable,
// unknown or (a reset mid-response) canceled. The caller has checked that
// the cancellation was not its own.
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeAborted, connect.CodeDeadlineExceeded, connect.CodeCanceled:
		return true
	}
	return false
}

// backoff waits a random time in the upper half of min(500 ms, 10 ms ×
// 2^attempt): the SDK's schedule, scaled down for a test.
func backoff(ctx context.Context, attempt int) {
	d := min(500*time.Millisecond, 10*time.Millisecond<<min(attempt, 10))
	d = d/2 + rand.N(d/2)
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// readHistory is the whole conversation, oldest first.
func readHistory(ctx context.Context, m *member, conv int64) ([]*v1.Message, error) {
	var out []*v1.Message
	after := int64(0)
	for {
		res, err := m.chat.ListMessages(ctx, &v1.ListMessagesRequest{
			ConversationId: conv, Position: &v1.ListMessagesRequest_AfterSeq{AfterSeq: after}, Limit: 200,
		})
		if err != nil {
			return nil, err
		}
		out = append(out, res.GetMessages()...)
		if !res.GetHasMore() || len(res.GetMessages()) == 0 {
			return out, nil
		}
		after = out[len(out)-1].GetSeq()
	}
}

// sameMessage compares what identifies a message and what it says.
func sameMessage(a, b *v1.Message) bool {
	return a.GetConversationId() == b.GetConversationId() && a.GetSeq() == b.GetSeq() &&
		a.GetSenderId() == b.GetSenderId() && a.GetClientMsgId() == b.GetClientMsgId() && a.GetText() == b.GetText()
}

// listener is a client that follows docs/PUSH.md to the letter: open the
// socket and buffer, list every conversation, set missing cursors to
// read_seq, read back what is behind, then deliver live messages in order,
// reading back on a gap; on any close, back off and start over with the
// cursors kept. What it hands "to the app" is delivered.
type listener struct {
	m *member

	mu        sync.Mutex
	cursor    map[int64]int64
	delivered map[int64][]*v1.Message
	problems  []string
	sessions  int
	on        []string          // the node of each socket, in order
	pushedOn  map[string]string // client_msg_id → the node whose socket pushed it live
	advanced  chan struct{}     // closed and replaced whenever a cursor moves
}

func newListener(m *member) *listener {
	return &listener{
		m: m, cursor: map[int64]int64{}, delivered: map[int64][]*v1.Message{}, advanced: make(chan struct{}),
		pushedOn: map[string]string{},
	}
}

// run keeps a session going until ctx ends; synced is closed after the
// first complete resync.
func (l *listener) run(ctx context.Context, synced chan struct{}) {
	var once sync.Once
	for attempt := 0; ctx.Err() == nil; attempt++ {
		l.session(ctx, func() {
			attempt = 0
			once.Do(func() { close(synced) })
		})
		backoff(ctx, attempt)
	}
}

// session is one socket's life: steps 1–5 of the resync procedure, until
// the socket or an RPC fails (step 6 is run's loop).
func (l *listener) session(ctx context.Context, onSynced func()) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	// The member's client, so the socket fails over as its RPCs do; the
	// host in the URL is only the home node's name.
	ws, _, err := websocket.Dial(dctx, "ws://"+l.m.node.addrs[0]+"/v1/push", &websocket.DialOptions{
		HTTPClient:   l.m.http,
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + l.m.token}},
		Subprotocols: []string{"karlmalone.v1.proto"},
	})
	cancel()
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	on := l.m.node.addr() // where the dial just went
	l.mu.Lock()
	l.sessions++
	l.on = append(l.on, on)
	l.mu.Unlock()

	// Step 1: buffer what arrives from now on.
	live, ended, done := make(chan *v1.Message, 1024), make(chan error, 1), make(chan struct{})
	defer close(done)
	go func() {
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				ended <- err
				return
			}
			ev := &v1.Event{}
			if err := proto.Unmarshal(data, ev); err != nil {
				ended <- err
				return
			}
			if m := ev.GetMessage(); m != nil {
				select {
				case live <- m:
				case <-done:
					return
				}
			}
		}
	}()

	if err := l.resync(ctx); err != nil { // steps 2–4
		return err
	}
	onSynced()
	for { // step 5
		select {
		case m := <-live:
			if err := l.offer(ctx, m, on); err != nil {
				return err
			}
		case err := <-ended:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// resync lists every conversation, sets the cursors it lacks to read_seq
// and reads back whatever is behind.
func (l *listener) resync(ctx context.Context) error {
	token := ""
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := l.m.chat.ListConversations(rctx, &v1.ListConversationsRequest{PageSize: 100, PageToken: token})
		cancel()
		if err != nil {
			return err
		}
		for _, c := range res.GetConversations() {
			l.mu.Lock()
			cur, ok := l.cursor[c.GetId()]
			if !ok {
				cur = c.GetReadSeq()
				l.cursor[c.GetId()] = cur
			}
			l.mu.Unlock()
			if c.GetLastSeq() > cur {
				if err := l.readBack(ctx, c.GetId()); err != nil {
					return err
				}
			}
		}
		if token = res.GetNextPageToken(); token == "" {
			return nil
		}
	}
}

// offer takes one pushed message: a duplicate is dropped, the next one
// delivered, one past a gap makes it read back. (The SDK waits 250 ms for
// the gap to fill first; reading back at once is as correct, only dearer.)
// on is the node whose socket pushed it.
func (l *listener) offer(ctx context.Context, m *v1.Message, on string) error {
	l.mu.Lock()
	cur, known := l.cursor[m.GetConversationId()]
	l.mu.Unlock()
	switch {
	case !known: // a conversation that appeared since the listing
		return l.resync(ctx)
	case m.GetSeq() <= cur:
		return nil
	case m.GetSeq() == cur+1:
		l.deliver(m, on)
		return nil
	default:
		return l.readBack(ctx, m.GetConversationId())
	}
}

// readBack delivers the history after the cursor, page by page.
func (l *listener) readBack(ctx context.Context, conv int64) error {
	for {
		l.mu.Lock()
		cur := l.cursor[conv]
		l.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := l.m.chat.ListMessages(rctx, &v1.ListMessagesRequest{
			ConversationId: conv, Position: &v1.ListMessagesRequest_AfterSeq{AfterSeq: cur}, Limit: 200,
		})
		cancel()
		if err != nil {
			return err
		}
		for _, m := range res.GetMessages() {
			l.deliver(m, "")
		}
		if !res.GetHasMore() {
			return nil
		}
	}
}

// deliver hands m to the app if it is the next one; history answering out
// of order is a problem the test reports. pushedOn is the node whose socket
// pushed it, empty if it was read back.
func (l *listener) deliver(m *v1.Message, pushedOn string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	conv, cur := m.GetConversationId(), l.cursor[m.GetConversationId()]
	switch {
	case m.GetSeq() <= cur:
		return
	case m.GetSeq() != cur+1:
		l.problems = append(l.problems, fmt.Sprintf("history skipped from seq %d to %d", cur, m.GetSeq()))
	}
	l.delivered[conv] = append(l.delivered[conv], m)
	l.cursor[conv] = m.GetSeq()
	if pushedOn != "" {
		l.pushedOn[m.GetClientMsgId()] = pushedOn
	}
	close(l.advanced)
	l.advanced = make(chan struct{})
}

// waitFor returns once the listener's cursor in conv reaches seq.
func (l *listener) waitFor(ctx context.Context, conv, seq int64) error {
	for {
		l.mu.Lock()
		cur, advanced := l.cursor[conv], l.advanced
		l.mu.Unlock()
		if cur >= seq {
			return nil
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return fmt.Errorf("cursor at %d, want %d: %w", cur, seq, errors.Join(ctx.Err(), context.Cause(ctx)))
		}
	}
}

// view is what the listener delivered in conv, the problems it met and how
// many sockets it opened.
func (l *listener) view(conv int64) ([]*v1.Message, []string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*v1.Message(nil), l.delivered[conv]...), append([]string(nil), l.problems...), l.sessions
}

// crossPushes is the node of each socket the listener opened, in order, and
// how many messages it was pushed live by one node that another node had
// acknowledged, neither of them dead: messages that crossed through NATS.
func (l *listener) crossPushes(ackedVia map[string]string, dead string) ([]string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for id, on := range l.pushedOn {
		if via := ackedVia[id]; via != "" && via != on && via != dead && on != dead {
			n++
		}
	}
	return append([]string(nil), l.on...), n
}
