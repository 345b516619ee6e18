// Package server holds the Connect handlers of KarlMalone's four services and
// the attachment routes, with authentication, validation and the one error
// mapping (toConnectError), and mounts them, the push endpoint and the plain
// HTTP routes on one http.Handler (New).
//
// A handler reads: caller from context → validate → a query or a transaction
// through the store (package store, which hides PostgreSQL) → map rows to
// protos (rows.go) → publish events (events.go) after the commit. The way of
// a message from SendMessage to a socket, and where each invariant is kept,
// is in docs/ARCHITECTURE.md.
package server

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/karlmalone/karlmalone/attachment"
	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/internal/password"
	"github.com/karlmalone/karlmalone/push"
	"github.com/karlmalone/karlmalone/store"
)

// Config holds the server's tunables. Zero durations and sizes take the
// defaults (DefaultConfig, the one place they are written); a zero RateLimit
// is off.
type Config struct {
	// TokenTTL is how long an access token lives.
	TokenTTL time.Duration
	// MaxRequestBytes bounds an RPC request body.
	MaxRequestBytes int
	// RegisterPerAddr, LoginPerAddr and LoginPerPhone throttle sign-up and
	// sign-in per client address and per phone.
	RegisterPerAddr RateLimit
	LoginPerAddr    RateLimit
	LoginPerPhone   RateLimit
	// SendPerMember throttles SendMessage per member (all devices together).
	SendPerMember RateLimit
	// GroupMaxMembers is the most members a new group may have.
	GroupMaxMembers int
	// RecallWindow is how long after sending a sender may recall a message.
	RecallWindow time.Duration
	// AttachmentDir is where uploads are stored.
	AttachmentDir string
	// MaxAttachmentBytes bounds one upload.
	MaxAttachmentBytes int64
	// AttachmentQuotaBytes bounds what one member's attachments add up to
	// (sent or not yet collected).
	AttachmentQuotaBytes int64
	// AttachmentUploadPerMember throttles uploads per member.
	AttachmentUploadPerMember RateLimit
	// An upload's body must keep arriving: each AttachmentReadIdle without a
	// byte ends it, and it must be complete within AttachmentReadTimeout.
	AttachmentReadIdle    time.Duration
	AttachmentReadTimeout time.Duration
	// Attachments that no message carries are removed AttachmentGCGrace
	// after their upload, by a pass every AttachmentGCInterval that removes
	// at most AttachmentGCBatch rows (AttachmentCollector).
	AttachmentGCGrace    time.Duration
	AttachmentGCInterval time.Duration
	AttachmentGCBatch    int
	// BodyReadTimeout bounds how long an RPC's request body may take to
	// arrive, from the end of its headers.
	BodyReadTimeout time.Duration
	// SubscribeKeepalive is how often a quiet Subscribe stream gets an empty
	// response, so that proxies keep it and both ends notice a dead peer.
	SubscribeKeepalive time.Duration
	// SubscribeWriteTimeout bounds one write on a Subscribe stream: a
	// client that stops reading is cut off after it.
	SubscribeWriteTimeout time.Duration
	// CORSOrigins are the browser origins allowed to call the API, like
	// https://app.example.com (see CheckCORSOrigins); empty: no CORS.
	CORSOrigins []string
}

// DefaultConfig returns the production defaults; the command's flags and the
// tests take theirs from here.
func DefaultConfig() Config {
	return Config{
		TokenTTL:        30 * 24 * time.Hour,
		MaxRequestBytes: 1 << 20,
		RegisterPerAddr: RateLimit{Every: 6 * time.Second, Burst: 20},
		LoginPerAddr:    RateLimit{Every: time.Second, Burst: 30},
		LoginPerPhone:   RateLimit{Every: 12 * time.Second, Burst: 10},
		// 20 messages a second sustained, 100 at once: far above a person
		// typing, low enough to stop a runaway client from flooding a group.
		SendPerMember:   RateLimit{Every: 50 * time.Millisecond, Burst: 100},
		GroupMaxMembers: 2000,
		RecallWindow:    2 * time.Minute,

		AttachmentDir:      ".data/attachments",
		MaxAttachmentBytes: 20 << 20,
		// A thousand full-size photos: far above a person's use, low enough
		// that one account cannot fill the disk.
		AttachmentQuotaBytes: 1 << 30,
		// 30 at once (an album), then one every 2 s.
		AttachmentUploadPerMember: RateLimit{Every: 2 * time.Second, Burst: 30},
		// 30 s without a byte is a dead line; 10 minutes is 20 MiB at 280 kbit/s.
		AttachmentReadIdle:    30 * time.Second,
		AttachmentReadTimeout: 10 * time.Minute,
		// A client uploads and then sends at once; a day covers one that
		// went offline in between.
		AttachmentGCGrace:    24 * time.Hour,
		AttachmentGCInterval: time.Hour,
		AttachmentGCBatch:    1000,

		// A 1 MiB body takes well under a second on any live line.
		BodyReadTimeout: 15 * time.Second,
		// Below the 30–60 s idle timeouts of common proxies and load balancers.
		SubscribeKeepalive:    25 * time.Second,
		SubscribeWriteTimeout: 10 * time.Second,
	}
}

// withDefaults fills the zero durations, sizes and paths from DefaultConfig.
// Rate limits and CORS origins stay as given: zero turns them off.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	orDefault(&c.TokenTTL, d.TokenTTL)
	orDefault(&c.MaxRequestBytes, d.MaxRequestBytes)
	orDefault(&c.GroupMaxMembers, d.GroupMaxMembers)
	orDefault(&c.RecallWindow, d.RecallWindow)
	orDefault(&c.AttachmentDir, d.AttachmentDir)
	orDefault(&c.MaxAttachmentBytes, d.MaxAttachmentBytes)
	orDefault(&c.AttachmentQuotaBytes, d.AttachmentQuotaBytes)
	orDefault(&c.AttachmentReadIdle, d.AttachmentReadIdle)
	orDefault(&c.AttachmentReadTimeout, d.AttachmentReadTimeout)
	orDefault(&c.AttachmentGCGrace, d.AttachmentGCGrace)
	orDefault(&c.AttachmentGCInterval, d.AttachmentGCInterval)
	orDefault(&c.AttachmentGCBatch, d.AttachmentGCBatch)
	orDefault(&c.BodyReadTimeout, d.BodyReadTimeout)
	orDefault(&c.SubscribeKeepalive, d.SubscribeKeepalive)
	orDefault(&c.SubscribeWriteTimeout, d.SubscribeWriteTimeout)
	return c
}

// orDefault sets *v to def when it is zero (or negative, or "").
func orDefault[T cmp.Ordered](v *T, def T) {
	var zero T
	if *v <= zero {
		*v = def
	}
}

// Deps are what the handlers need from the outside world.
type Deps struct {
	Pool   *pgxpool.Pool
	Log    *slog.Logger
	Hasher *password.Hasher
	// Hub delivers events, serves GET /v1/push and ChatService.Subscribe.
	Hub *push.Hub
	// Attachments stores uploads (nil: the local directory Config.AttachmentDir).
	Attachments attachment.Store
	Config      Config
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Lifecycle, if set, is how the command shuts this server down in order
	// (BeginShutdown, then Drain); nil: the server never reports shutting down.
	Lifecycle *Lifecycle

	// testHookAuthenticated runs after every accepted token, before the
	// request goes on (set by tests through export_test.go).
	testHookAuthenticated func(Caller)
}

// base is what every service type shares.
type base struct {
	store *store.Store // transactions: store.InTx
	q     *db.Queries  // single statements: store.Queries()
	log   *slog.Logger
	hub   *push.Hub
	cfg   Config
	now   func() time.Time
}

// publish stamps and sends an event; call it only after the change committed.
func (b *base) publish(memberIDs []int64, ev *v1.Event) {
	if len(memberIDs) == 0 {
		return
	}
	ev.At = timestamppb.New(b.now())
	b.hub.Publish(memberIDs, ev)
}

// New builds every service and mounts them on one mux.
func New(d Deps) http.Handler {
	d.Config = d.Config.withDefaults()
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Pool == nil || d.Hub == nil || d.Hasher == nil {
		panic("server.New: Deps.Pool, Deps.Hub and Deps.Hasher are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Lifecycle == nil {
		d.Lifecycle = new(Lifecycle)
	}
	st := store.New(d.Pool)
	b := &base{store: st, q: st.Queries(), log: d.Log, hub: d.Hub, cfg: d.Config, now: d.Now}
	authn := &Authenticator{q: b.q, log: d.Log, now: d.Now, testHookAuthenticated: d.testHookAuthenticated}

	m := newMetrics(d.Pool, d.Hub)
	opts := connect.WithHandlerOptions(
		connect.WithInterceptors(m.interceptor(), accessLog(d.Log), errorInterceptor(d.Log), authInterceptor{authn}),
		connect.WithReadMaxBytes(d.Config.MaxRequestBytes),
		// Gzip only what is worth it: most responses are a few hundred bytes.
		connect.WithCompressMinBytes(1024),
		connect.WithRecover(func(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
			d.Log.ErrorContext(ctx, "panic in handler", "procedure", spec.Procedure, "panic", fmt.Sprint(p))
			return connect.NewError(connect.CodeInternal, fmt.Errorf("internal error"))
		}),
	)
	mux := http.NewServeMux()
	// Each service behind rpcGuard: body deadline, and auth before the body.
	guarded := func(path string, h http.Handler) (string, http.Handler) {
		return path, &rpcGuard{authn: authn, cfg: d.Config, errs: connect.NewErrorWriter(),
			metrics: m, access: &accessLogger{log: d.Log}, next: h}
	}
	mux.Handle(guarded(karlmalonev1connect.NewMemberServiceHandler(newMemberServer(b, d.Hasher), opts)))
	mux.Handle(guarded(karlmalonev1connect.NewContactServiceHandler(&ContactServer{base: b}, opts)))
	mux.Handle(guarded(karlmalonev1connect.NewGroupServiceHandler(&GroupServer{base: b}, opts)))
	chat := newChatServer(b)
	d.Lifecycle.onDrain(chat.sends.drain)
	mux.Handle(guarded(karlmalonev1connect.NewChatServiceHandler(chat, opts)))
	mux.Handle("GET /v1/push", push.NewHandler(d.Hub, authn.principal))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if d.Lifecycle.ShuttingDown() {
			// First thing on SIGTERM: the load balancer stops sending new
			// requests while those it sent are still served.
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := st.Ping(ctx); err != nil {
			http.Error(w, "database unreachable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mountWebApp(mux) // GET /{$}: the chat app (web/app), or rootText for non-browsers
	mountRoutes(mux, d, b, authn, m)
	return withCORS(d.Config.CORSOrigins, mux)
}

const rootText = `KarlMalone instant-messaging API

Services (Connect, gRPC and gRPC-Web, JSON or binary, on this port):
  karlmalone.v1.MemberService, ContactService, GroupService, ChatService
Push: GET /v1/push (WebSocket)
API description: /openapi.yaml  (browsable: /docs)
Health: /healthz, /readyz, gRPC grpc.health.v1.Health; metrics: /metrics
Attachments: POST /v1/attachments, GET /v1/attachments/{id}
`

// clientAddr is the caller's IP address, for per-client rate limits.
func clientAddr(ctx context.Context) string {
	info, ok := connect.CallInfoForHandlerContext(ctx)
	if !ok {
		return ""
	}
	host, _, err := net.SplitHostPort(info.Peer().Addr)
	if err != nil {
		return info.Peer().Addr
	}
	return host
}
