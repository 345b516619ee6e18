package server_test

// Transport limits (docs/SECURITY.md, "Transport, push and attachments"):
// the per-member cap on push receivers, the Subscribe keepalive, the body
// read deadline and authentication before the body.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/push"
	"github.com/karlmalone/karlmalone/server"
)

// tryPushDial opens a push socket and returns the handshake's HTTP status
// when the server refuses it.
func tryPushDial(t testing.TB, e *env, token string) (*websocket.Conn, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ws, res, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.URL, "http")+"/v1/push", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token}},
	})
	if err != nil {
		if res == nil {
			t.Fatalf("dial push: %v", err)
		}
		return nil, res.StatusCode
	}
	t.Cleanup(func() { ws.CloseNow() })
	return ws, http.StatusSwitchingProtocols
}

// A member holds at most push.Config.MaxPerMember sockets and Subscribe
// streams together; the next is refused (429, resource_exhausted) and
// others are not affected. Closing one makes room again.
func TestPushMaxPerMember(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withPushConfig(push.Config{MaxPerMember: 3}))
	a, b := e.register(t, "ann"), e.register(t, "bob")
	makeContacts(t, a, b)

	first := e.connect(t, a)
	e.connect(t, a)
	stream := subscribe(t, e, a.Chat)
	if _, status := tryPushDial(t, e, a.Token); status != http.StatusTooManyRequests {
		t.Fatalf("a fourth receiver's handshake answered %d, want 429", status)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	extra, err := a.Chat.Subscribe(ctx, &v1.SubscribeRequest{})
	if err == nil {
		for extra.Receive() {
		}
		err = extra.Err()
	}
	wantCode(t, err, connect.CodeResourceExhausted)
	if got := e.Hub.Stats(); got.Connections != 2 || got.Subscriptions != 1 {
		t.Fatalf("hub holds %d sockets and %d streams, want 2 and 1", got.Connections, got.Subscriptions)
	}

	// Another member is not counted against ann, and ann's receivers work.
	bob := e.connect(t, b)
	sent := chatSend(t, b, peerText(a.ID, "cap-1", "hello"))
	wantProto(t, "ann's event under the cap", sent, first.next().GetMessage())
	wantProto(t, "ann's stream under the cap", sent, nextFromStream(t, stream).GetMessage())
	wantProto(t, "bob's own echo", sent, bob.next().GetMessage())

	// A closed socket makes room.
	first.ws.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "ann's socket to be unregistered", func() bool { return e.Hub.Stats().Connections == 2 }) // ann's one left + bob's
	if _, status := tryPushDial(t, e, a.Token); status != http.StatusSwitchingProtocols {
		t.Fatalf("a socket after one closed answered %d, want 101", status)
	}
}

// A quiet Subscribe stream gets empty keepalive responses; events still
// arrive between them.
func TestSubscribeKeepalive(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) { c.SubscribeKeepalive = 20 * time.Millisecond }))
	a, b := e.register(t, "ann"), e.register(t, "bob")
	makeContacts(t, a, b)
	for name, chat := range map[string]karlmalonev1connect.ChatServiceClient{
		"connect": a.Chat, "grpc": e.grpcClients(a.Token).Chat,
	} {
		stream := subscribe(t, e, chat)
		for range 2 {
			if !stream.Receive() {
				t.Fatalf("%s: stream ended: %v", name, stream.Err())
			}
			if ev := stream.Msg().GetEvent(); ev != nil {
				t.Fatalf("%s: got %v on a quiet stream, want a keepalive", name, ev)
			}
		}
		sent := chatSend(t, b, peerText(a.ID, "ka-"+name, "through the keepalives"))
		for stream.Receive() {
			if ev := stream.Msg().GetEvent(); ev != nil {
				wantProto(t, name+": event between keepalives", sent, ev.GetMessage())
				break
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s: stream ended: %v", name, err)
		}
	}
}

// rawConn is a TCP connection to the server for requests no well-behaved
// client sends.
func rawConn(t testing.TB, e *env) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// promiseBody writes the headers of a JSON POST to procedure that promises
// length bytes of body, and the first bytes of it.
func promiseBody(t testing.TB, conn net.Conn, procedure, token string, length int, first string) {
	t.Helper()
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s",
		procedure, auth, length, first); err != nil {
		t.Fatal(err)
	}
}

// wantCutOff reads what the server answers on conn and fails unless it
// closes the connection within 10 s; it returns the answer's status (0: none).
func wantCutOff(t testing.TB, conn net.Conn, what string) int {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	status := 0
	if res, err := http.ReadResponse(br, nil); err == nil {
		status = res.StatusCode
		io.Copy(io.Discard, res.Body)
	}
	for {
		if _, err := br.ReadByte(); err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				t.Fatalf("%s: the server still holds the connection after 10 s (answered %d)", what, status)
			}
			return status
		}
	}
}

// A client that promises a body and sends nothing, or stops halfway, is cut
// off after Config.BodyReadTimeout, with or without a token; the next
// request on a fresh connection is served.
func TestSlowBodyCutOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) { c.BodyReadTimeout = 200 * time.Millisecond }))
	a := e.register(t, "ann")
	for _, tc := range []struct{ name, procedure, token, first string }{
		{"authenticated, nothing sent", karlmalonev1connect.MemberServiceGetMeProcedure, a.Token, ""},
		{"authenticated, half sent", karlmalonev1connect.MemberServiceUpdateProfileProcedure, a.Token, `{"nickname":`},
		{"public method", karlmalonev1connect.MemberServiceLoginProcedure, "", `{"phone":"`},
	} {
		conn := rawConn(t, e)
		promiseBody(t, conn, tc.procedure, tc.token, 100, tc.first)
		if status := wantCutOff(t, conn, tc.name); status == http.StatusOK {
			t.Errorf("%s: answered 200 to a body that never came", tc.name)
		}
	}
	if _, err := a.Members.GetMe(t.Context(), &v1.GetMeRequest{}); err != nil {
		t.Fatalf("GetMe after the slow bodies: %v", err)
	}
}

// A request to an authenticated method without a valid token is answered
// unauthenticated from its headers: the server reads none of the body it
// promised (here 1 MiB, of which nothing is sent; the body deadline is long,
// so only an answer that does not wait for the body arrives in time).
func TestUnauthenticatedBodyNotRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) { c.BodyReadTimeout = 5 * time.Minute }))
	for _, token := range []string{"", "not-a-token"} {
		conn := rawConn(t, e)
		promiseBody(t, conn, karlmalonev1connect.ChatServiceSendMessageProcedure, token, 1<<20, "")
		if status := wantCutOff(t, conn, "HTTP/1.1, token "+token); status != http.StatusUnauthorized {
			t.Errorf("HTTP/1.1, token %q: answered %d, want 401", token, status)
		}
	}

	// gRPC over HTTP/2: answered in gRPC's own terms.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := e.grpcClients("").Chat.SendMessage(ctx, &v1.SendMessageRequest{})
	wantCode(t, err, connect.CodeUnauthenticated)

	// HTTP/2: the answer comes while the body is still open, and nothing of
	// it was read.
	pr, pw := io.Pipe() // a body that yields nothing until closed
	defer pw.Close()
	body := &countingReader{r: pr}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.URL+karlmalonev1connect.ChatServiceSendMessageProcedure, body)
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = 1 << 20
	var res *http.Response
	res, err = e.H2C.Do(req)
	if err != nil {
		t.Fatalf("h2c POST without a token: %v", err)
	}
	n := body.n
	pw.Close() // the transport waits for its body writer before it lets go
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized || n != 0 {
		t.Fatalf("h2c POST without a token: %d after %d body bytes, want 401 after none", res.StatusCode, n)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// The push read limit (push.Config.ReadLimit, 4 KiB): a client frame over
// it, by one byte or by 60 KiB, is refused unread (1009, message too big);
// one under it is read and refused as clients send nothing (1008). Without
// the limit the library's own (32 KiB) would let the 4 KiB + 1 frame in, and
// this test fail.
func TestPushReadLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.register(t, "ann")
	limit := int(push.DefaultConfig().ReadLimit)
	for _, tc := range []struct {
		size int
		want websocket.StatusCode
	}{
		{limit + 1, websocket.StatusMessageTooBig},
		{64 << 10, websocket.StatusMessageTooBig},
		{limit, websocket.StatusPolicyViolation},
	} {
		ws := pushDial(t, e, a.Token, &websocket.DialOptions{})
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_ = ws.Write(ctx, websocket.MessageBinary, make([]byte, tc.size)) // fails once the server has closed
		_, _, err := ws.Read(ctx)
		cancel()
		if got := websocket.CloseStatus(err); got != tc.want {
			t.Errorf("a %d-byte frame: socket ended with %v (status %d), want %d", tc.size, err, got, tc.want)
		}
	}
}

// A Subscribe client that stops reading is cut off after
// Config.SubscribeWriteTimeout: the stream's handler ends (and is logged)
// instead of waiting on a write for good.
func TestSubscribeWriteDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) { c.SubscribeWriteTimeout = 300 * time.Millisecond }),
		withPushConfig(push.Config{QueueSize: 4096}))
	a, b := e.register(t, "ann"), e.register(t, "bob")
	makeContacts(t, a, b)

	// A client with a tiny receive window that reads the headers and then
	// nothing.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
	}}
	conn, err := d.DialContext(t.Context(), "tcp", strings.TrimPrefix(e.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/connect+json\r\nAuthorization: Bearer %s\r\nContent-Length: 7\r\n\r\n\x00\x00\x00\x00\x02{}",
		karlmalonev1connect.ChatServiceSubscribeProcedure, a.Token)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReaderSize(conn, 16), nil)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("Subscribe: %v %v", res, err)
	}
	waitFor(t, "the stream to register", func() bool { return e.Hub.Stats().Subscriptions == 1 })

	// 16 KB events until the socket buffers are full and a write blocks.
	text := strings.Repeat("😀", 4000)
	ended := func() bool {
		return strings.Contains(e.Logs.String(), "procedure="+karlmalonev1connect.ChatServiceSubscribeProcedure)
	}
	for i := 0; i < 2000 && !ended(); i++ {
		chatSend(t, b, peerText(a.ID, fmt.Sprint("fill-", i), text))
	}
	waitFor(t, "the stuck stream to end", ended)
}
