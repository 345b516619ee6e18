package server_test

// Push as clients see it through the server: real WebSockets on GET /v1/push
// in both encodings, and ChatService.Subscribe over Connect and gRPC.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/push"
)

// connectJSON opens c's push socket asking for protojson text frames, as a
// browser would.
func connectJSON(t testing.TB, e *env, c *client) *events {
	t.Helper()
	ws := pushDial(t, e, c.Token, &websocket.DialOptions{Subprotocols: []string{push.SubprotocolJSON}})
	if ws.Subprotocol() != push.SubprotocolJSON {
		t.Fatalf("server chose subprotocol %q", ws.Subprotocol())
	}
	return &events{t: t, ws: ws, json: true}
}

// subscribe opens ChatService.Subscribe and returns once the response headers
// arrived: the server sends them after the hub registered the subscription.
func subscribe(t testing.TB, e *env, chat karlmalonev1connect.ChatServiceClient) *connect.ServerStreamForClient[v1.SubscribeResponse] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	stream, err := chat.Subscribe(ctx, &v1.SubscribeRequest{})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() { stream.Close() })
	stream.ResponseHeader() // blocks until the headers arrive
	if n := e.Hub.Stats().Subscriptions; n == 0 {
		t.Fatal("the stream's headers arrived before the hub registered it")
	}
	return stream
}

// nextFromStream returns the next event a Subscribe stream yields.
func nextFromStream(t testing.TB, stream *connect.ServerStreamForClient[v1.SubscribeResponse]) *v1.Event {
	t.Helper()
	if !stream.Receive() {
		t.Fatalf("Subscribe stream ended: %v", stream.Err())
	}
	return stream.Msg().GetEvent()
}

// 1. One recipient device of every kind gets the same 1:1 and group message.
func TestPushMessageEveryEncoding(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "cat")
	makeContacts(t, a, b)
	g := newGroup(t, a, b, c)

	binary := e.connect(t, b)
	text := connectJSON(t, e, b)
	streams := map[string]*connect.ServerStreamForClient[v1.SubscribeResponse]{
		"connect proto": subscribe(t, e, b.Chat),
		"connect json":  subscribe(t, e, e.clients(b.Token, connect.WithProtoJSON()).Chat),
		"grpc h2c":      subscribe(t, e, e.grpcClients(b.Token).Chat),
	}

	for _, req := range []*v1.SendMessageRequest{
		peerText(b.ID, "direct-1", "hello bob 👋"),
		groupText(g.GetId(), "group-1", "hello group"),
	} {
		sent := chatSend(t, a, req)
		want := &v1.Event{At: &timestamppb.Timestamp{}, Kind: &v1.Event_Message{Message: sent}}
		wantProto(t, "binary socket's event", want, binary.next(), anyTime)
		got, raw := text.nextRaw()
		wantProto(t, "JSON socket's event", want, got, anyTime)
		// JSON clients see lowerCamelCase names and ids as strings.
		if !strings.Contains(string(raw), `"clientMsgId":"`+sent.GetClientMsgId()+`"`) ||
			!strings.Contains(string(raw), fmt.Sprintf(`"conversationId":"%d"`, sent.GetConversationId())) {
			t.Errorf("JSON frame %s", raw)
		}
		for name, s := range streams {
			wantProto(t, name+" stream's event", want, nextFromStream(t, s), anyTime)
		}
	}
}

// 1b. A Subscribe stream of a session that logs out gets the revocation and
// ends unauthenticated; the member's other streams go on.
func TestPushSubscribeSessionRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	makeContacts(t, a, b)
	b2 := e.login(t, b.Phone, b.Password)
	gone, stays := subscribe(t, e, e.grpcClients(b.Token).Chat), subscribe(t, e, b2.Chat)

	if _, err := b.Members.Logout(t.Context(), &v1.LogoutRequest{}); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	// Its session_revoked event may or may not come first (the hub drops
	// what is queued when it ends a stream); the end is what matters.
	for gone.Receive() {
		if ev := gone.Msg().GetEvent(); ev.GetSessionRevoked().GetSessionId() != b.SessionID {
			t.Fatalf("revoked stream got %v", ev)
		}
	}
	wantCode(t, gone.Err(), connect.CodeUnauthenticated)

	nextFromStream(t, stays) // the same session_revoked, for the other device
	sent := chatSend(t, a, peerText(b.ID, "after", "still here"))
	wantProto(t, "the other device's message", sent, nextFromStream(t, stays).GetMessage())
}

// 2. Many senders into one large group, every member online: each member
// gets every message once, in seq order, and history agrees.
func TestPushStressGroupFanout(t *testing.T) {
	t.Parallel()
	// The numbers: 10,000 messages, 1,000,000 frames. Under -race on
	// 2 cores that takes over 3 minutes (the race runtime's cost per frame and
	// per writer goroutine dominates), so -race runs a tenth of the messages
	// to the same 100 members unless KARLMALONE_STRESS=full.
	members, senders, perSender := 100, 50, 200
	switch {
	case testing.Short():
		members, senders, perSender = 20, 10, 20
	case raceEnabled() && os.Getenv("KARLMALONE_STRESS") != "full":
		perSender = 20
	}
	total := senders * perSender
	// Each socket may fall behind by up to all of the messages: on 2 cores
	// under -race, 100 readers share the CPU with the server. This test is
	// about completeness and order; the slow-consumer policy has its own test.
	// For the same reason a starved reader must not count as dead: pings and
	// the write deadline (their own tests cover them) are pushed out of the
	// way, or a busy machine drops whole shards of sockets at the first ping.
	e := newEnv(t, withPushConfig(push.Config{QueueSize: total + 16, PingInterval: time.Hour, WriteTimeout: 5 * time.Minute}))
	began := time.Now()

	clients := make([]*client, members)
	for i := range clients {
		clients[i] = e.register(t, fmt.Sprint("m", i))
	}
	g := openGroup(t, clients[0], clients[1:]...)
	conv := g.GetConversationId()
	socks := make([]*events, members)
	for i, c := range clients {
		socks[i] = e.connect(t, c)
	}
	setup := time.Since(began)

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	// One reader per socket. Each checks seq order as it goes and folds what
	// it saw into a digest to compare with history.
	type seen struct {
		n      int
		digest uint64
		err    error
	}
	results := make([]seen, members)
	var readers sync.WaitGroup
	for i, s := range socks {
		readers.Go(func() {
			r := &results[i]
			for r.n < total {
				typ, data, err := s.ws.Read(ctx)
				if err != nil {
					r.err = fmt.Errorf("after %d messages: %w", r.n, err)
					return
				}
				ev := &v1.Event{}
				if typ != websocket.MessageBinary || proto.Unmarshal(data, ev) != nil {
					r.err = fmt.Errorf("undecodable frame after %d messages", r.n)
					return
				}
				m := ev.GetMessage()
				if m == nil || m.GetConversationId() != conv {
					continue
				}
				if m.GetSeq() != int64(r.n+1) {
					r.err = fmt.Errorf("got seq %d after %d messages: a gap, a repeat or out of order", m.GetSeq(), r.n)
					return
				}
				r.n++
				r.digest = digest(r.digest, m)
			}
		})
	}

	// Senders are members too, each on its own Connect client sharing one
	// h2c connection.
	acked := make([][]int64, senders)
	sendErrs := make([]error, senders)
	var sendWG sync.WaitGroup
	sendStart := time.Now()
	for s := range senders {
		chat := karlmalonev1connect.NewChatServiceClient(e.H2C, e.URL, connect.WithInterceptors(bearer(clients[s].Token)))
		sendWG.Go(func() {
			for i := range perSender {
				res, err := chat.SendMessage(ctx, groupText(g.GetId(), fmt.Sprintf("s%d-%d", s, i), fmt.Sprintf("message %d of sender %d", i, s)))
				if err != nil {
					sendErrs[s] = fmt.Errorf("sender %d message %d: %w", s, i, err)
					return
				}
				acked[s] = append(acked[s], res.GetMessage().GetSeq())
			}
		})
	}
	sendWG.Wait()
	sending := time.Since(sendStart)
	if err := errors.Join(sendErrs...); err != nil {
		cancel()
		readers.Wait()
		t.Fatal(err)
	}
	readers.Wait()
	delivering := time.Since(sendStart)

	// Every acknowledged seq is distinct, and together they are 1…total.
	var all []int64
	for s, seqs := range acked {
		if !slices.IsSorted(seqs) {
			t.Errorf("sender %d's messages got seqs out of its own order: %v", s, seqs)
		}
		all = append(all, seqs...)
	}
	slices.Sort(all)
	if !slices.Equal(all, seqRange(1, int64(total))) {
		t.Fatalf("acknowledged seqs are not exactly 1…%d (%d of them)", total, len(all))
	}
	history := chatHistory(t, clients[members-1], conv)
	if !slices.Equal(seqsOf(history), seqRange(1, int64(total))) {
		t.Fatalf("history has %d messages, not seqs 1…%d", len(history), total)
	}
	var want uint64
	for _, m := range history {
		want = digest(want, m)
	}
	for i, r := range results {
		if r.err != nil || r.n != total || r.digest != want {
			t.Errorf("member %d: %d of %d messages, digest match %v, err %v", i, r.n, total, r.digest == want, r.err)
		}
	}
	if s := e.Hub.Stats(); s.SlowConsumerDisconnects != 0 {
		t.Errorf("hub stats %+v", s)
	}
	t.Logf("%d members, %d senders × %d messages: setup %v, sending %v, all delivered after %v (%d frames)",
		members, senders, perSender, setup.Round(time.Millisecond), sending.Round(time.Millisecond),
		delivering.Round(time.Millisecond), total*members)
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// digest folds a message into a running hash of (seq, sender, client id, text).
func digest(h uint64, m *v1.Message) uint64 {
	f := fnv.New64a()
	fmt.Fprintf(f, "%d/%d/%s/%s", m.GetSeq(), m.GetSenderId(), m.GetClientMsgId(), m.GetText())
	return h*1099511628211 ^ f.Sum64()
}

// 3. Push is the fast path, history the truth: messages sent while a device
// is offline are all in ListMessages after the last seq it saw.
func TestPushReconnectResync(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	first := e.connect(t, b)
	chatSend(t, a, peerText(b.ID, "0", "before the drop"))
	lastSeen := first.next().GetMessage().GetSeq()

	first.ws.CloseNow() // the network drops; no close handshake
	waitFor(t, "the hub to notice the dead socket", func() bool { return e.Hub.Stats().Connections == 0 })
	for i := 1; i <= 20; i++ {
		chatSend(t, a, peerText(b.ID, fmt.Sprint(i), fmt.Sprint("missed ", i)))
	}

	again := e.connect(t, b)
	res, err := b.Chat.ListMessages(t.Context(), &v1.ListMessagesRequest{
		ConversationId: conv, Position: &v1.ListMessagesRequest_AfterSeq{AfterSeq: lastSeen},
	})
	if err != nil {
		t.Fatalf("ListMessages: %v", err)
	}
	if got := seqsOf(res.GetMessages()); !slices.Equal(got, seqRange(lastSeen+1, lastSeen+20)) || res.GetHasMore() {
		t.Fatalf("resync got seqs %v (has_more %v), want the 20 missed", got, res.GetHasMore())
	}
	for i, m := range res.GetMessages() {
		if m.GetText() != fmt.Sprint("missed ", i+1) {
			t.Fatalf("resync message %d: %v", i, m)
		}
	}
	// And the new socket is live.
	sent := chatSend(t, a, peerText(b.ID, "live", "back online"))
	wantProto(t, "the reconnected socket's message", sent, again.next().GetMessage())
}

// 4. A socket that never reads is closed with 1008 once its queue overflows;
// the other members get every message.
func TestPushSlowReaderDropped(t *testing.T) {
	t.Parallel()
	// The slow client reads nothing, so it answers no ping either: pings wait
	// past the test, so that only the queue can drop it however long the
	// sending takes on a busy machine.
	e := newEnv(t, withPushConfig(push.Config{QueueSize: 4, PingInterval: time.Hour}))
	a, fast, slow := e.register(t, "ann"), e.register(t, "fast"), e.register(t, "slow")
	g := newGroup(t, a, fast, slow)

	// The slow client's tiny receive buffer lets the server's socket buffer
	// fill after a few frames, so the writer blocks and the queue overflows.
	smallBuffer := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(256 << 10) // above loopback's MSS, or window updates stall
		}
		return c, err
	}}}
	slowWS := pushDial(t, e, slow.Token, &websocket.DialOptions{HTTPClient: smallBuffer})
	fastEv := e.connect(t, fast)

	// The fast member reads concurrently, as a live client does.
	got := make(chan *v1.Message, 4096)
	go func() {
		defer close(got)
		for {
			_, data, err := fastEv.ws.Read(t.Context())
			if err != nil {
				return
			}
			ev := &v1.Event{}
			if proto.Unmarshal(data, ev) == nil && ev.GetMessage() != nil {
				got <- ev.GetMessage()
			}
		}
	}()

	big := strings.Repeat("😀", 4000) // 16 KB a frame
	var sent []*v1.Message
	for len(sent) < 2000 && e.Hub.Stats().SlowConsumerDisconnects == 0 {
		sent = append(sent, chatSend(t, a, groupText(g.GetId(), fmt.Sprint(len(sent)), big)))
	}
	if e.Hub.Stats().SlowConsumerDisconnects != 1 {
		t.Fatalf("no slow consumer after %d messages: %+v", len(sent), e.Hub.Stats())
	}
	// Two more after the drop: the others still get them.
	for range 2 {
		sent = append(sent, chatSend(t, a, groupText(g.GetId(), fmt.Sprint(len(sent)), "small")))
	}
	t.Logf("slow consumer dropped after %d messages", len(sent)-2)

	// The slow client, reading at last, finds what it had buffered and then
	// the close: 1008, policy violation.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		_, _, err := slowWS.Read(ctx)
		if err == nil {
			continue
		}
		if code := websocket.CloseStatus(err); code != websocket.StatusPolicyViolation {
			t.Fatalf("slow socket ended with %v (status %d), want policy violation", err, code)
		}
		break
	}
	for i, want := range sent {
		select {
		case m := <-got:
			wantProto(t, fmt.Sprintf("fast member's message %d", i), want, m)
		case <-ctx.Done():
			t.Fatalf("fast member got %d of %d messages", i, len(sent))
		}
	}
}

// 7. A client frame the server does not accept (too big, a data frame, or not
// WebSocket at all) closes that socket only; the server keeps serving.
func TestPushBadClientFrames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	makeContacts(t, a, b)
	bystander := e.connect(t, b)

	// Bytes that are not WebSocket framing at all, on a raw upgraded connection.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key := make([]byte, 16)
	rand.Read(key)
	fmt.Fprintf(conn, "GET /v1/push HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\nAuthorization: Bearer %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(key), a.Token)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw upgrade: %v %v", res, err)
	}
	if n := e.Hub.Stats().Connections; n != 2 { // registered before the 101
		t.Fatalf("hub holds %d sockets after the raw upgrade, want 2", n)
	}
	conn.Write([]byte("\xff\xff\xff\xff\xff\xff\xff\xff garbage, unmasked, reserved bits set"))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, err := br.ReadByte(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the server kept a connection that sent garbage")
			}
			break // closed by the server
		}
	}
	waitFor(t, "the raw socket to be unregistered", func() bool { return e.Hub.Stats().Connections == 1 })

	// A data frame, too big or not: the server closes the socket. This part
	// checks what the client sees: coder/websocket's CloseRead, closing on a
	// data frame, waits 15 s for its own goroutine, so the hub unregisters
	// such a socket only that much later.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		typ  websocket.MessageType
		body []byte
	}{
		{"oversized", websocket.MessageBinary, make([]byte, 64<<10)},
		{"garbage", websocket.MessageText, []byte("\x00{not an event")},
	} {
		ws := pushDial(t, e, a.Token, &websocket.DialOptions{})
		// Write may fail once the server has closed; the close code is what counts.
		_ = ws.Write(ctx, tc.typ, tc.body)
		_, _, err := ws.Read(ctx)
		if code := websocket.CloseStatus(err); code != websocket.StatusPolicyViolation && code != websocket.StatusMessageTooBig {
			t.Errorf("%s frame: socket ended with %v (status %d), want policy violation or message too big", tc.name, err, code)
		}
	}

	// The server and the other socket carry on.
	sent := chatSend(t, a, peerText(b.ID, "still", "serving"))
	wantProto(t, "the bystander's message", sent, bystander.next().GetMessage())
}

// 8. Shutdown closes sockets with "going away" and ends streams unavailable,
// and every message acknowledged before it is in history.
func TestPushShutdownGoingAway(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.register(t, "ann"), e.register(t, "bob")
	conv := makeContacts(t, a, b)
	sock := e.connect(t, b)
	stream := subscribe(t, e, b.Chat)

	// Senders keep sending through the shutdown.
	var acked sync.Map
	var n atomic.Int64
	stop := make(chan struct{})
	enough := make(chan struct{})
	var once sync.Once
	var senders sync.WaitGroup
	for s := range 4 {
		senders.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				res, err := a.Chat.SendMessage(context.Background(), peerText(b.ID, fmt.Sprintf("%d-%d", s, i), "during shutdown"))
				if err != nil {
					t.Errorf("send during shutdown: %v", err)
					return
				}
				acked.Store(res.GetMessage().GetSeq(), true)
				if n.Add(1) >= 20 {
					once.Do(func() { close(enough) })
				}
			}
		})
	}
	// The device reads throughout, as a live client does (and so answers the
	// close handshake at once).
	sockEnd := make(chan error, 1)
	go func() {
		for {
			if _, _, err := sock.ws.Read(context.Background()); err != nil {
				sockEnd <- err
				return
			}
		}
	}()
	<-enough
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := e.Hub.Shutdown(ctx); err != nil {
		t.Fatalf("hub shutdown: %v", err)
	}
	select {
	case err := <-sockEnd:
		if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
			t.Fatalf("socket ended with %v (status %d), want going away", err, code)
		}
	case <-ctx.Done():
		t.Fatal("socket still open after shutdown")
	}
	for stream.Receive() {
	}
	wantCode(t, stream.Err(), connect.CodeUnavailable)
	close(stop)
	senders.Wait()

	// New sockets are refused; RPCs still work and store.
	_, res, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.URL, "http")+"/v1/push", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + b.Token}},
	})
	if err == nil || res == nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after shutdown: %v %v", res, err)
	}
	history := chatHistory(t, b, conv)
	if !slices.Equal(seqsOf(history), seqRange(1, int64(len(history)))) {
		t.Fatalf("history has a gap: %v", seqsOf(history))
	}
	missing := 0
	acked.Range(func(k, _ any) bool {
		if seq := k.(int64); seq > int64(len(history)) {
			missing++
		}
		return true
	})
	if missing > 0 || n.Load() != int64(len(history)) {
		t.Fatalf("%d acknowledged, %d in history, %d acknowledged but missing", n.Load(), len(history), missing)
	}
}
