package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"

	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
)

// The push subprotocol that gives binary protobuf frames of karlmalone.v1.Event.
const subprotocolProto = "karlmalone.v1.proto"

// sourceDialer dials from a rotating set of source addresses, so that more
// than one address's ~28k ephemeral ports can reach one server address.
// With no addresses it dials as the system chooses.
type sourceDialer struct {
	addrs []net.IP
	next  atomic.Uint64
}

// newSourceDialer spreads over 127.0.0.1–127.0.0.n when the server is on a
// loopback address and n > 0.
func newSourceDialer(serverHost string, n int) *sourceDialer {
	d := &sourceDialer{}
	if n <= 0 || !isLoopback(serverHost) {
		return d
	}
	for i := 1; i <= min(n, 255); i++ {
		d.addrs = append(d.addrs, net.IPv4(127, 0, 0, byte(i)))
	}
	return d
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.To4() != nil && ip.IsLoopback()
}

func (d *sourceDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if len(d.addrs) > 0 {
		ip := d.addrs[d.next.Add(1)%uint64(len(d.addrs))]
		nd.LocalAddr = &net.TCPAddr{IP: ip}
		if network == "tcp" {
			network = "tcp4" // the source is IPv4: do not try ::1
		}
	}
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return c, nil
}

// clients are the Connect clients and the WebSocket dialer of one run.
type clients struct {
	base    string // http://host:port
	pushURL string // ws://host:port/v1/push

	member  karlmalonev1connect.MemberServiceClient
	contact karlmalonev1connect.ContactServiceClient
	group   karlmalonev1connect.GroupServiceClient
	chat    karlmalonev1connect.ChatServiceClient

	wsHTTP *http.Client
}

// newClients builds HTTP/1.1 transports (like many independent clients: one
// TCP connection per request in flight, not one multiplexed HTTP/2 stream)
// and binary-protobuf Connect clients with a bearer-token interceptor.
func newClients(addr string, sources, maxConns int) (*clients, error) {
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-addr %q: want http://host:port", addr)
	}
	dialer := newSourceDialer(u.Hostname(), sources)
	rpc := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConns:        maxConns,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	ws := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: -1, // sockets are hijacked; nothing to keep idle
	}
	hc := &http.Client{Transport: rpc}
	base := strings.TrimRight(u.String(), "/")
	pushURL := strings.Replace(base, "http", "ws", 1) + "/v1/push"
	opts := connect.WithInterceptors(bearer{})
	return &clients{
		base:    base,
		pushURL: pushURL,
		member:  karlmalonev1connect.NewMemberServiceClient(hc, base, opts),
		contact: karlmalonev1connect.NewContactServiceClient(hc, base, opts),
		group:   karlmalonev1connect.NewGroupServiceClient(hc, base, opts),
		chat:    karlmalonev1connect.NewChatServiceClient(hc, base, opts),
		wsHTTP:  &http.Client{Transport: ws},
	}, nil
}

type tokenKey struct{}

// withToken makes the Connect calls made with ctx carry the token.
func withToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, tokenKey{}, token)
}

// bearer sets "Authorization: Bearer <token>" from the context.
type bearer struct{}

func (bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if t, ok := ctx.Value(tokenKey{}).(string); ok {
			req.Header().Set("Authorization", "Bearer "+t)
		}
		return next(ctx, req)
	}
}

func (bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if t, ok := ctx.Value(tokenKey{}).(string); ok {
			conn.RequestHeader().Set("Authorization", "Bearer "+t)
		}
		return conn
	}
}

func (bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// dialPush opens an authenticated /v1/push socket with binary protobuf
// frames. onPing, when not nil, is called for every ping the server sends
// (the library answers it while a Read is pending).
func (c *clients) dialPush(ctx context.Context, token string, onPing func()) (*websocket.Conn, error) {
	opts := &websocket.DialOptions{
		HTTPClient:   c.wsHTTP,
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
		Subprotocols: []string{subprotocolProto},
	}
	if onPing != nil {
		opts.OnPingReceived = func(context.Context, []byte) bool { onPing(); return true }
	}
	ws, resp, err := websocket.Dial(ctx, c.pushURL, opts)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial push: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial push: %w", err)
	}
	if ws.Subprotocol() != subprotocolProto {
		ws.CloseNow()
		return nil, fmt.Errorf("dial push: server chose subprotocol %q, want %q", ws.Subprotocol(), subprotocolProto)
	}
	ws.SetReadLimit(1 << 20)
	return ws, nil
}

// codeOf names the Connect code of an RPC error for the error tallies:
// "internal" and "unknown" are the server failing (HTTP 5xx).
func codeOf(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "deadline_exceeded"
	}
	return connect.CodeOf(err).String()
}
