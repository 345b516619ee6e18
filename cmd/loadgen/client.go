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

// pushEncodings are the /v1/push subprotocols, by the name -push-encoding
// takes. The batched ones carry an EventBatch per WebSocket message, the
// others one Event.
var pushEncodings = map[string]string{
	"proto":       "karlmalone.v1.proto",
	"json":        "karlmalone.v1.json",
	"proto.batch": "karlmalone.v1.proto.batch",
	"json.batch":  "karlmalone.v1.json.batch",
}

// RPC protocols (-rpc-protocol).
const (
	rpcHTTP1 = "http1" // one TCP connection per request in flight, as from many independent clients
	rpcH2C   = "h2c"   // HTTP/2 over cleartext TCP: requests multiplexed over -rpc-conns connections, as a mobile client does over its one
)

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
// Everything a member does goes through rpc(m) and dialPush, the one place
// that decides which connection and which node serves it: with several
// nodes (-addrs), member i (or socket i) goes to node i mod N, as a load
// balancer without sticky sessions would spread them.
type clients struct {
	nodes    []*nodeClients
	protocol string // the RPC protocol, rpcHTTP1 or rpcH2C

	subprotocol string // /v1/push subprotocol
	wsHTTP      *http.Client
}

// nodeClients reach one node.
type nodeClients struct {
	base    string        // http://host:port
	pushURL string        // ws://host:port/v1/push
	rpcs    []*rpcClients // member i uses rpcs[i % len(rpcs)]
}

// rpcClients are the Connect clients over one HTTP transport.
type rpcClients struct {
	member  karlmalonev1connect.MemberServiceClient
	contact karlmalonev1connect.ContactServiceClient
	group   karlmalonev1connect.GroupServiceClient
	chat    karlmalonev1connect.ChatServiceClient
}

// node is the node that serves member (or socket) i.
func (c *clients) node(i int) *nodeClients { return c.nodes[i%len(c.nodes)] }

// rpc returns the clients member m calls through.
func (c *clients) rpc(m *member) *rpcClients {
	n := c.node(m.idx)
	return n.rpcs[m.idx%len(n.rpcs)]
}

// clientOptions are what newClients needs from the flags.
type clientOptions struct {
	addrs        []string // the nodes' base URLs
	sources      int      // source addresses to spread connections over
	maxConns     int      // HTTP/1.1: most connections kept idle for reuse
	protocol     string   // rpcHTTP1 or rpcH2C
	h2Conns      int      // h2c: multiplexed connections (each its own transport)
	pushEncoding string   // a key of pushEncodings
}

// newClients builds binary-protobuf Connect clients with a bearer-token
// interceptor over HTTP/1.1 (one TCP connection per request in flight, like
// many independent clients) or h2c (each of h2Conns transports multiplexes
// its requests over one connection per node), and the WebSocket dialer.
func newClients(o clientOptions) (*clients, error) {
	sp, ok := pushEncodings[o.pushEncoding]
	if !ok {
		return nil, fmt.Errorf("-push-encoding %q: want proto, proto.batch, json or json.batch", o.pushEncoding)
	}
	if len(o.addrs) == 0 {
		return nil, fmt.Errorf("no server address")
	}
	var urls []*url.URL
	loopback := true
	for _, a := range o.addrs {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("server address %q: want http://host:port", a)
		}
		if o.protocol == rpcH2C && u.Scheme != "http" {
			return nil, fmt.Errorf("-rpc-protocol h2c needs http:// addresses, not %q", a)
		}
		loopback = loopback && isLoopback(u.Hostname())
		urls = append(urls, u)
	}
	sources := o.sources
	if !loopback {
		sources = 0
	}
	dialer := newSourceDialer("127.0.0.1", sources)
	c := &clients{
		protocol:    o.protocol,
		subprotocol: sp,
		wsHTTP: &http.Client{Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			MaxIdleConnsPerHost: -1, // sockets are hijacked; nothing to keep idle
		}},
	}
	var transports []*http.Transport
	switch o.protocol {
	case rpcHTTP1:
		transports = append(transports, &http.Transport{
			DialContext:         dialer.DialContext,
			MaxIdleConns:        o.maxConns * len(urls),
			MaxIdleConnsPerHost: o.maxConns,
			IdleConnTimeout:     90 * time.Second,
		})
	case rpcH2C:
		for range max(o.h2Conns, 1) {
			t := &http.Transport{DialContext: dialer.DialContext, IdleConnTimeout: 90 * time.Second}
			t.Protocols = new(http.Protocols)
			t.Protocols.SetUnencryptedHTTP2(true) // prior knowledge: no upgrade dance
			transports = append(transports, t)
		}
	default:
		return nil, fmt.Errorf("-rpc-protocol %q: want %s or %s", o.protocol, rpcHTTP1, rpcH2C)
	}
	opts := connect.WithInterceptors(bearer{})
	for _, u := range urls {
		base := strings.TrimRight(u.String(), "/")
		n := &nodeClients{base: base, pushURL: strings.Replace(base, "http", "ws", 1) + "/v1/push"}
		for _, t := range transports {
			hc := &http.Client{Transport: t}
			n.rpcs = append(n.rpcs, &rpcClients{
				member:  karlmalonev1connect.NewMemberServiceClient(hc, base, opts),
				contact: karlmalonev1connect.NewContactServiceClient(hc, base, opts),
				group:   karlmalonev1connect.NewGroupServiceClient(hc, base, opts),
				chat:    karlmalonev1connect.NewChatServiceClient(hc, base, opts),
			})
		}
		c.nodes = append(c.nodes, n)
	}
	return c, nil
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

// dialPush opens an authenticated /v1/push socket in the run's subprotocol
// on the node of i (a member's or a socket's index). onPing, when not nil,
// is called for every ping the server sends (the library answers it while a
// Read is pending).
func (c *clients) dialPush(ctx context.Context, i int, token string, onPing func()) (*websocket.Conn, error) {
	opts := &websocket.DialOptions{
		HTTPClient:   c.wsHTTP,
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
		Subprotocols: []string{c.subprotocol},
	}
	if onPing != nil {
		opts.OnPingReceived = func(context.Context, []byte) bool { onPing(); return true }
	}
	ws, resp, err := websocket.Dial(ctx, c.node(i).pushURL, opts)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial push: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial push: %w", err)
	}
	if ws.Subprotocol() != c.subprotocol {
		ws.CloseNow()
		return nil, fmt.Errorf("dial push: server chose subprotocol %q, want %q", ws.Subprotocol(), c.subprotocol)
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
