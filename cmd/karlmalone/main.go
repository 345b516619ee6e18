// Command karlmalone is the KarlMalone instant-messaging server.
//
//	karlmalone [serve] [flags]   serve the API (migrating the database first)
//	karlmalone migrate [flags]   apply pending migrations and exit
//	karlmalone help              list the commands
//
// Every flag has an environment fallback, listed by -help; every default
// comes from defaultConfig, server.DefaultConfig and push.DefaultConfig.
// docs/ARCHITECTURE.md describes the shutdown order serve keeps.
package main

import (
	"context"
	"encoding"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/karlmalone/karlmalone/attachment"
	"github.com/karlmalone/karlmalone/internal/password"
	"github.com/karlmalone/karlmalone/notify"
	"github.com/karlmalone/karlmalone/push"
	"github.com/karlmalone/karlmalone/schema"
	"github.com/karlmalone/karlmalone/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "karlmalone:", err)
		os.Exit(1)
	}
}

// config is everything the flags set.
type config struct {
	listen          string
	debugListen     string
	databaseURL     string
	logLevel        slog.Level
	logFormat       string
	tlsCert         string
	tlsKey          string
	dbMaxConns      int
	shutdownTimeout time.Duration
	shutdownDrain   time.Duration
	insecureFast    bool
	hashConcurrency int
	server          server.Config
	push            push.Config
	cluster         clusterConfig
	// notify is the offline notifications' webhook, webhook the integration
	// events' (docs/CHAT-FEATURES.md); an empty URL turns either off.
	notify, webhook notify.Config

	// HTTP server and database connection limits.
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	maxHeaderBytes    int
	dbConnectTimeout  time.Duration
}

// defaultConfig is every flag's default, written once: the command's own
// here, the server's and the hub's from their packages.
func defaultConfig() config {
	return config{
		listen:          ":5288",
		logLevel:        slog.LevelInfo,
		logFormat:       "text",
		dbMaxConns:      4*runtime.GOMAXPROCS(0) + 8,
		shutdownTimeout: 15 * time.Second,
		// Long enough for a load balancer's health check (every few
		// seconds) to see /readyz fail and stop sending new requests.
		shutdownDrain:     5 * time.Second,
		hashConcurrency:   runtime.GOMAXPROCS(0),
		server:            server.DefaultConfig(),
		push:              push.DefaultConfig(),
		notify:            notify.DefaultConfig(),
		webhook:           notify.DefaultConfig(),
		readHeaderTimeout: 10 * time.Second,
		idleTimeout:       2 * time.Minute,
		maxHeaderBytes:    64 << 10,
		dbConnectTimeout:  5 * time.Second,
	}
}

// commands are the subcommands, as `karlmalone help` lists them.
var commands = []struct{ name, summary string }{
	{"serve", "serve the API, migrating the database first (the default)"},
	{"migrate", "apply pending migrations and exit"},
	{"help", "list the commands; `karlmalone COMMAND -help` lists a command's flags"},
}

func isHelpFlag(arg string) bool {
	switch strings.TrimLeft(arg, "-") {
	case "h", "help":
		return true
	}
	return false
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: karlmalone [command] [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery flag has an environment fallback, listed by -help.")
}

// clusterConfig is what joins a node to others (docs/CLUSTER.md).
type clusterConfig struct {
	natsURL  string              // empty: this node alone
	nodeName string              // empty: the host name
	s3       attachment.S3Config // Endpoint empty: attachments in -attachment-dir
}

// parseFlags reads args, with each flag defaulting to its environment
// variable and then to defaultConfig.
func parseFlags(cmd string, args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("karlmalone "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: karlmalone %s [flags]\n\nflags:\n", cmd)
		fs.PrintDefaults()
	}
	env := envFlags{fs: fs, getenv: getenv}
	d := defaultConfig()
	c := &d

	env.String(&c.listen, "listen", "KARLMALONE_LISTEN", "address to serve on")
	env.String(&c.databaseURL, "database-url", "DATABASE_URL", "PostgreSQL URL (required)")
	env.Text(&c.logLevel, "log-level", "KARLMALONE_LOG_LEVEL", "log level: debug, info, warn, error")
	env.String(&c.logFormat, "log-format", "KARLMALONE_LOG_FORMAT", "log format: text or json")
	env.String(&c.tlsCert, "tls-cert", "KARLMALONE_TLS_CERT", "TLS certificate file (serve HTTPS and HTTP/2 over TLS)")
	env.String(&c.tlsKey, "tls-key", "KARLMALONE_TLS_KEY", "TLS key file")
	env.String(&c.debugListen, "debug-listen", "KARLMALONE_DEBUG_LISTEN", "serve /debug/pprof on this address (e.g. 127.0.0.1:6060); empty: off")
	env.Int(&c.dbMaxConns, "db-max-conns", "KARLMALONE_DB_MAX_CONNS", "most database connections")
	env.Duration(&c.shutdownTimeout, "shutdown-timeout", "KARLMALONE_SHUTDOWN_TIMEOUT", "how long shutdown waits for requests in flight")
	env.Duration(&c.shutdownDrain, "shutdown-drain", "KARLMALONE_SHUTDOWN_DRAIN", "on SIGTERM, how long /readyz reports not ready, while requests are still served, before shutdown goes on (0: none)")
	env.Duration(&c.server.TokenTTL, "token-ttl", "KARLMALONE_TOKEN_TTL", "access token lifetime")
	env.Int(&c.server.MaxRequestBytes, "max-request-bytes", "KARLMALONE_MAX_REQUEST_BYTES", "largest RPC request body")
	env.Int(&c.server.GroupMaxMembers, "group-max-members", "KARLMALONE_GROUP_MAX_MEMBERS", "most members a new group may have")
	env.Int(&c.server.GroupMaxInvitees, "group-max-invitees", "KARLMALONE_GROUP_MAX_INVITEES", "most members one CreateGroup or AddGroupMembers call may add")
	env.Duration(&c.server.RecallWindow, "recall-window", "KARLMALONE_RECALL_WINDOW", "how long after sending a message its sender may recall it")
	env.Duration(&c.server.EditWindow, "edit-window", "KARLMALONE_EDIT_WINDOW", "how long after sending a text message its sender may edit it")
	env.Int(&c.hashConcurrency, "hash-concurrency", "KARLMALONE_HASH_CONCURRENCY", "most password hashes computed at once (each takes 19 MiB)")
	env.Bool(&c.insecureFast, "insecure-fast-password-hash", "KARLMALONE_INSECURE_FAST_PASSWORD_HASH", "benchmarks only: hash passwords with trivial argon2id parameters")
	env.Rate(&c.server.RegisterPerAddr, "register-rate", "KARLMALONE_REGISTER_RATE", "registrations per client address, as interval/burst (0 disables)")
	env.Rate(&c.server.LoginPerAddr, "login-rate-addr", "KARLMALONE_LOGIN_RATE_ADDR", "failed logins per client address, as interval/burst (0 disables)")
	env.Rate(&c.server.LoginPerPhoneAddr, "login-rate-phone-addr", "KARLMALONE_LOGIN_RATE_PHONE_ADDR", "failed logins per phone from one client address, as interval/burst (0 disables)")
	var trustedProxies string // parsed into server.TrustedProxies below
	env.String(&trustedProxies, "trusted-proxies", "KARLMALONE_TRUSTED_PROXIES", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client, like 10.0.0.0/8 (empty: none; the peer address counts)")
	env.Rate(&c.server.PasswordChangePerMember, "login-password-change-rate", "KARLMALONE_LOGIN_PASSWORD_CHANGE_RATE", "password changes per member, as interval/burst (0 disables)")
	env.Rate(&c.server.PhoneLookupPerMember, "search-phone-rate", "KARLMALONE_SEARCH_PHONE_RATE", "SearchMembers by exact phone per member, as interval/burst (0 disables)")
	env.Rate(&c.server.MemberLookupPerMember, "search-member-rate", "KARLMALONE_SEARCH_MEMBER_RATE", "GetMember calls per member, as interval/burst (0 disables)")
	env.Duration(&c.server.TypingInterval, "typing-interval", "KARLMALONE_TYPING_INTERVAL", "least time between two typing events of a member in a conversation; calls in between are dropped (0: no limit)")
	env.Duration(&c.server.SessionSweepInterval, "login-session-sweep-interval", "KARLMALONE_LOGIN_SESSION_SWEEP_INTERVAL", "how often expired sessions are deleted (0: never)")
	env.Rate(&c.server.SendPerMember, "send-rate", "KARLMALONE_SEND_RATE", "messages sent per member, as interval/burst (0 disables)")
	env.String(&c.server.AttachmentDir, "attachment-dir", "KARLMALONE_ATTACHMENT_DIR", "directory where uploaded attachments are stored")
	env.Int64(&c.server.MaxAttachmentBytes, "max-attachment-bytes", "KARLMALONE_MAX_ATTACHMENT_BYTES", "largest attachment upload, in bytes")
	env.Int64(&c.server.AttachmentQuotaBytes, "attachment-quota-bytes", "KARLMALONE_ATTACHMENT_QUOTA_BYTES", "most bytes of attachments one member may hold (sent, or unsent and not yet collected)")
	env.Rate(&c.server.AttachmentUploadPerMember, "attachment-upload-rate", "KARLMALONE_ATTACHMENT_UPLOAD_RATE", "attachment uploads per member, as interval/burst (0 disables)")
	env.Duration(&c.server.AttachmentReadIdle, "attachment-read-idle-timeout", "KARLMALONE_ATTACHMENT_READ_IDLE_TIMEOUT", "how long an upload may go without a byte before it is cut off")
	env.Duration(&c.server.AttachmentReadTimeout, "attachment-read-timeout", "KARLMALONE_ATTACHMENT_READ_TIMEOUT", "how long one upload's body may take in all")
	env.Duration(&c.server.AttachmentGCGrace, "attachment-gc-grace", "KARLMALONE_ATTACHMENT_GC_GRACE", "how long an attachment no message carries is kept after its upload")
	env.Duration(&c.server.AttachmentGCInterval, "attachment-gc-interval", "KARLMALONE_ATTACHMENT_GC_INTERVAL", "how often unsent attachments are collected")
	env.Int(&c.server.AttachmentGCBatch, "attachment-gc-batch", "KARLMALONE_ATTACHMENT_GC_BATCH", "most attachments one collection pass removes")
	env.String(&c.server.AttachmentURLKey, "attachment-url-key", "KARLMALONE_ATTACHMENT_URL_KEY", "key that signs attachment download URLs, at least 32 characters, the same on every node (empty: one generated at first start and kept in the database)")
	env.Duration(&c.server.AttachmentURLTTL, "attachment-url-ttl", "KARLMALONE_ATTACHMENT_URL_TTL", "how long a signed attachment download URL works")
	env.Int(&c.server.SessionCacheSize, "session-cache-size", "KARLMALONE_SESSION_CACHE_SIZE", "most sessions each node caches (token → session, instead of a database read per call)")
	env.Duration(&c.server.SessionCacheTTL, "session-cache-ttl", "KARLMALONE_SESSION_CACHE_TTL", "how long a node caches a session: the longest a revocation can go unnoticed on a node cut off from NATS")
	env.Duration(&c.server.PresenceDebounce, "presence-debounce", "KARLMALONE_PRESENCE_DEBOUNCE", "how long a member's presence changes are gathered before its contacts hear of them (a flap within it is not reported)")
	var corsOrigins string // parsed into server.CORSOrigins below
	env.String(&corsOrigins, "cors-origins", "KARLMALONE_CORS_ORIGINS", "comma-separated browser origins allowed to call the API and open push sockets, like https://app.example.com (empty: none)")
	env.Duration(&c.readHeaderTimeout, "read-header-timeout", "KARLMALONE_READ_HEADER_TIMEOUT", "how long a client may take to send request headers")
	env.Duration(&c.server.BodyReadTimeout, "read-body-timeout", "KARLMALONE_READ_BODY_TIMEOUT", "how long a client may take to send an RPC's request body, after its headers")
	env.Duration(&c.idleTimeout, "idle-timeout", "KARLMALONE_IDLE_TIMEOUT", "how long an idle keep-alive connection stays open")
	env.Int(&c.maxHeaderBytes, "max-header-bytes", "KARLMALONE_MAX_HEADER_BYTES", "largest request header block")
	env.Duration(&c.dbConnectTimeout, "db-connect-timeout", "KARLMALONE_DB_CONNECT_TIMEOUT", "how long opening a database connection may take before requests fail")
	env.Int(&c.push.Shards, "push-shards", "KARLMALONE_PUSH_SHARDS", "push hub shards (rounded up to a power of two)")
	env.Int(&c.push.QueueSize, "push-queue-size", "KARLMALONE_PUSH_QUEUE_SIZE", "events queued per push receiver before it is disconnected as too slow")
	env.Duration(&c.push.WriteTimeout, "push-write-timeout", "KARLMALONE_PUSH_WRITE_TIMEOUT", "how long one push frame write may take")
	env.Duration(&c.push.PingInterval, "push-ping-interval", "KARLMALONE_PUSH_PING_INTERVAL", "how often push sockets are pinged")
	env.Duration(&c.push.PingTimeout, "push-ping-timeout", "KARLMALONE_PUSH_PING_TIMEOUT", "how long a ping may go unanswered before the socket is dropped")
	env.Int64(&c.push.ReadLimit, "push-read-limit", "KARLMALONE_PUSH_READ_LIMIT", "largest frame a push client may send, in bytes")
	env.Int(&c.push.MaxPerMember, "push-max-per-member", "KARLMALONE_PUSH_MAX_PER_MEMBER", "most push sockets and Subscribe streams one member may hold open on this node (the next is refused: 429, resource_exhausted)")
	env.Duration(&c.server.SubscribeKeepalive, "push-subscribe-keepalive", "KARLMALONE_PUSH_SUBSCRIBE_KEEPALIVE", "how often a quiet Subscribe stream gets an empty keepalive response")
	env.Duration(&c.server.SubscribeWriteTimeout, "push-subscribe-write-timeout", "KARLMALONE_PUSH_SUBSCRIBE_WRITE_TIMEOUT", "how long one write on a Subscribe stream may take before the stream is cut")
	env.Int(&c.push.BatchEvents, "push-batch-events", "KARLMALONE_PUSH_BATCH_EVENTS", "most events in one message of the batched push subprotocols")
	env.Int(&c.push.BatchBytes, "push-batch-bytes", "KARLMALONE_PUSH_BATCH_BYTES", "most bytes in one batched push message (a single larger event goes alone)")
	env.Duration(&c.push.CoalesceWindow, "push-coalesce-window", "KARLMALONE_PUSH_COALESCE_WINDOW", "how long a busy batched push socket's writer waits after a write so the next carries more (0: off)")
	// Running several nodes (docs/CLUSTER.md): NATS between them, attachments
	// in an S3 bucket. The S3 keys come from the environment only, never from
	// the command line (which ps shows).
	cl := &c.cluster
	env.String(&cl.natsURL, "nats-url", "KARLMALONE_NATS_URL", "NATS server URL(s), comma-separated, joining this node to the others; empty: this node runs alone")
	env.String(&cl.nodeName, "node-name", "KARLMALONE_NODE_NAME", "this node's name in logs and to the other nodes (default: the host name)")
	env.String(&cl.s3.Endpoint, "s3-endpoint", "KARLMALONE_S3_ENDPOINT", "S3-compatible endpoint for attachments, like https://s3.eu-west-1.amazonaws.com (keys: KARLMALONE_S3_ACCESS_KEY, KARLMALONE_S3_SECRET_KEY); empty: -attachment-dir")
	env.String(&cl.s3.Bucket, "s3-bucket", "KARLMALONE_S3_BUCKET", "S3 bucket for attachments (it must exist)")
	env.String(&cl.s3.Prefix, "s3-prefix", "KARLMALONE_S3_PREFIX", "prefix of the attachments' keys in the S3 bucket")
	env.String(&cl.s3.Region, "s3-region", "KARLMALONE_S3_REGION", "S3 region (empty: asked of the endpoint)")
	env.Bool(&cl.s3.PathStyle, "s3-path-style", "KARLMALONE_S3_PATH_STYLE", "bucket in the URL's path, not its host name (MinIO, Ceph)")
	cl.s3.AccessKey, cl.s3.SecretKey = getenv("KARLMALONE_S3_ACCESS_KEY"), getenv("KARLMALONE_S3_SECRET_KEY")
	// Webhooks (docs/CHAT-FEATURES.md). Give the secrets in the environment
	// rather than as flags, which ps shows.
	for _, w := range []struct {
		c                     *notify.Config
		flag, env, what       string
		tuneFlag, tuneEnvName string // the prefix of the tuning flags
	}{
		{&c.notify, "notify-webhook", "KARLMALONE_NOTIFY_WEBHOOK", "offline notifications", "notify", "KARLMALONE_NOTIFY"},
		{&c.webhook, "webhook", "KARLMALONE_WEBHOOK", "integration events (messages, groups, members)", "webhook", "KARLMALONE_WEBHOOK"},
	} {
		env.String(&w.c.URL, w.flag+"-url", w.env+"_URL", "URL that receives "+w.what+" as signed JSON POSTs; empty: off")
		env.String(&w.c.Secret, w.flag+"-secret", w.env+"_SECRET", "HMAC-SHA256 key signing the "+w.what+" webhook (required with its URL; prefer the environment)")
		env.Int(&w.c.QueueSize, w.tuneFlag+"-queue-size", w.tuneEnvName+"_QUEUE_SIZE", w.what+" waiting for delivery before new ones are dropped")
		env.Int(&w.c.Workers, w.tuneFlag+"-workers", w.tuneEnvName+"_WORKERS", w.what+" delivered at once")
		env.Int(&w.c.Attempts, w.tuneFlag+"-attempts", w.tuneEnvName+"_ATTEMPTS", "tries per delivery of "+w.what+" (retried with backoff on 5xx, 429 and network errors)")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for _, w := range []struct {
		c    notify.Config
		flag string
	}{{c.notify, "notify-webhook"}, {c.webhook, "webhook"}} {
		if w.c.URL != "" && w.c.Secret == "" {
			return nil, fmt.Errorf("-%s-url needs -%s-secret: webhooks are always signed", w.flag, w.flag)
		}
	}
	if env.err != nil {
		return nil, env.err
	}
	if c.databaseURL == "" {
		return nil, errors.New("no database: set DATABASE_URL or -database-url (or use `make run`, which starts a private PostgreSQL)")
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	for p := range strings.SplitSeq(trustedProxies, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("-trusted-proxies: %w", err)
		}
		c.server.TrustedProxies = append(c.server.TrustedProxies, prefix.Masked())
	}
	for o := range strings.SplitSeq(corsOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.server.CORSOrigins = append(c.server.CORSOrigins, o)
		}
	}
	if err := server.CheckCORSOrigins(c.server.CORSOrigins); err != nil {
		return nil, fmt.Errorf("-cors-origins: %w", err)
	}
	if k := c.server.AttachmentURLKey; k != "" && len(k) < server.MinAttachmentURLKeyLen {
		return nil, fmt.Errorf("-attachment-url-key: want at least %d characters, got %d", server.MinAttachmentURLKeyLen, len(k))
	}
	// Browsers open push sockets from the same origins that call the API.
	c.push.OriginPatterns = c.server.CORSOrigins
	if s := c.cluster.s3; s.Endpoint != "" || s.Bucket != "" {
		if _, err := attachment.NewS3(s); err != nil {
			return nil, fmt.Errorf("-s3-endpoint, -s3-bucket: %w", err)
		}
	}
	return c, nil
}

// run is main without the process: tests call it with their own args and
// context. ready, if not nil, receives the listening address.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready chan<- string) error {
	cmd, named := "serve", false
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args, named = args[0], args[1:], true
	}
	switch {
	case cmd == "help":
		usage(stderr)
		return nil
	case !named && len(args) > 0 && isHelpFlag(args[0]):
		// `karlmalone -help`: the commands, then the flags of serve, the
		// default command (which parseFlags prints below).
		usage(stderr)
		fmt.Fprintln(stderr)
	case cmd != "serve" && cmd != "migrate":
		usage(stderr)
		return fmt.Errorf("unknown command %q (want serve or migrate)", cmd)
	}
	c, err := parseFlags(cmd, args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(c, stderr)

	pool, err := openPool(ctx, c)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := schema.Migrate(ctx, pool, log); err != nil {
		return err
	}
	if cmd == "migrate" {
		return nil
	}
	return serve(ctx, c, pool, log, ready)
}

func serve(ctx context.Context, c *config, pool *pgxpool.Pool, log *slog.Logger, ready chan<- string) error {
	params := password.DefaultParams
	if c.insecureFast {
		log.Warn("INSECURE: fast password hashing enabled; for benchmarks only")
		params = password.InsecureFastParams
	}
	store, err := attachmentStore(ctx, c, log)
	if err != nil {
		return err
	}
	if c.cluster.natsURL != "" {
		c.push.Bus = push.NewNATSBus(push.NATSConfig{URL: c.cluster.natsURL, Name: c.cluster.nodeName}, log)
	}
	if c.server.AttachmentURLKey == "" {
		if c.server.AttachmentURLKey, err = server.LoadAttachmentURLKey(ctx, pool); err != nil {
			return err
		}
	}
	hub := push.NewHub(server.PushEvents(c.push), log)
	life := new(server.Lifecycle)
	deps := server.Deps{
		Pool: pool, Log: log, Hasher: password.NewHasher(params, c.hashConcurrency),
		Hub: hub, Attachments: store, Config: c.server, Lifecycle: life,
	}
	// Closed last (deferred): requests in flight may still queue deliveries.
	if c.notify.URL != "" {
		n := notify.NewWebhook(c.notify, nil, log.With("webhook", "notify"))
		defer n.Close()
		deps.Notifier = n
	}
	if c.webhook.URL != "" {
		w := notify.NewEvents(c.webhook, nil, log.With("webhook", "integration"))
		defer w.Close()
		deps.Integrations = w
	}
	h := server.New(deps)
	// Expired sessions are deleted in the background until shutdown, and the
	// sweep is done before the pool closes.
	sweepCtx, stopSweep := context.WithCancel(ctx)
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		server.SweepSessions(sweepCtx, pool, log, c.server.SessionSweepInterval)
	}()
	defer func() { stopSweep(); <-sweepDone }()
	gcCtx, stopGC := context.WithCancel(context.Background())
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		server.NewAttachmentCollector(deps).Run(gcCtx)
	}()
	// Before the pool closes (run's deferred Close), on every way out.
	defer func() { stopGC(); <-gcDone }()

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	protocols.SetHTTP2(true)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.readHeaderTimeout,
		MaxHeaderBytes:    c.maxHeaderBytes,
		IdleTimeout:       c.idleTimeout,
		Protocols:         &protocols,
		// No ReadTimeout or WriteTimeout: they would cut streaming RPCs and
		// WebSockets, which bound their own writes.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.listen, err)
	}
	serveErr := make(chan error, 1)
	go func() {
		if c.tlsCert != "" {
			serveErr <- srv.ServeTLS(ln, c.tlsCert, c.tlsKey)
		} else {
			serveErr <- srv.Serve(ln)
		}
	}()
	if c.debugListen != "" {
		stopDebug, err := serveDebug(c.debugListen, log)
		if err != nil {
			return err
		}
		defer stopDebug()
	}
	log.Info("serving", "addr", ln.Addr().String(), "tls", c.tlsCert != "")
	if ready != nil {
		ready <- ln.Addr().String()
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// First /readyz turns not ready, for shutdownDrain, while everything
	// still serves: load balancers stop sending new requests. Then
	// http.Server.Shutdown, which ignores hijacked connections (WebSockets):
	// so close those first with "going away", then drain the requests in
	// flight, then the send pipeline (sends whose callers went away), then
	// the collector and the pool (deferred).
	log.Info("shutting down: not ready", "drain", c.shutdownDrain)
	life.BeginShutdown()
	if c.shutdownDrain > 0 {
		t := time.NewTimer(c.shutdownDrain)
		select {
		case <-t.C:
		case err := <-serveErr:
			t.Stop()
			return fmt.Errorf("serve: %w", err)
		}
	}
	log.Info("shutting down: closing connections")
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	if err := hub.Shutdown(sctx); err != nil {
		log.Warn("push hub shutdown", "err", err)
	}
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := life.Drain(sctx); err != nil {
		return fmt.Errorf("shutdown: drain the send pipeline: %w", err)
	}
	log.Info("stopped")
	return nil
}

// attachmentStore opens the S3 bucket or the local directory. It fails now,
// not at the first upload, when the store is unusable, and sweeps uploads a
// crash left half-written.
func attachmentStore(ctx context.Context, c *config, log *slog.Logger) (attachment.Store, error) {
	if c.cluster.s3.Endpoint == "" {
		fs := attachment.NewFS(c.server.AttachmentDir)
		n, err := fs.Prepare(24*time.Hour, time.Now())
		if n > 0 {
			log.Info("removed interrupted uploads", "count", n)
		}
		return fs, err
	}
	s3, err := attachment.NewS3(c.cluster.s3)
	if err != nil {
		return nil, err
	}
	n, err := s3.Prepare(ctx, 24*time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	if n > 0 {
		log.Info("removed interrupted uploads", "count", n)
	}
	log.Info("attachments in S3", "endpoint", c.cluster.s3.Endpoint, "bucket", c.cluster.s3.Bucket)
	return s3, nil
}

// serveDebug serves the profiler on its own listener, only when asked for:
// it must never share the public port.
func serveDebug(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on -debug-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Warn("profiler enabled", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}

func openPool(ctx context.Context, c *config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(c.databaseURL)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	pc.MaxConns = int32(c.dbMaxConns)
	pc.MinConns = 2
	pc.MaxConnIdleTime = 5 * time.Minute
	pc.HealthCheckPeriod = 15 * time.Second
	// Fail a request fast when the database is down, instead of hanging.
	pc.ConnConfig.ConnectTimeout = c.dbConnectTimeout
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database unreachable at %s: %w", redactURL(c.databaseURL), err)
	}
	return pool, nil
}

func newLogger(c *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.logLevel}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func redactURL(s string) string {
	cfg, err := pgxpool.ParseConfig(s)
	if err != nil {
		return "(unparsable)"
	}
	return fmt.Sprintf("host=%s db=%s user=%s", cfg.ConnConfig.Host, cfg.ConnConfig.Database, cfg.ConnConfig.User)
}

// envFlags defines flags whose defaults come from environment variables.
type envFlags struct {
	fs     *flag.FlagSet
	getenv func(string) string
	err    error
}

func (e *envFlags) usage(usage, name string) string { return usage + " (env " + name + ")" }

// Each method defines a flag whose default is the environment variable when
// set, else *p as it stands (from defaultConfig): a default is never written
// beside a flag.

func (e *envFlags) String(p *string, flagName, envName, usage string) {
	if v := e.getenv(envName); v != "" {
		*p = v
	}
	e.fs.StringVar(p, flagName, *p, e.usage(usage, envName))
}

func (e *envFlags) Int(p *int, flagName, envName, usage string) {
	e.parseEnv(envName, func(v string) (err error) { *p, err = strconv.Atoi(v); return err })
	e.fs.IntVar(p, flagName, *p, e.usage(usage, envName))
}

func (e *envFlags) Int64(p *int64, flagName, envName, usage string) {
	e.parseEnv(envName, func(v string) (err error) { *p, err = strconv.ParseInt(v, 10, 64); return err })
	e.fs.Int64Var(p, flagName, *p, e.usage(usage, envName))
}

func (e *envFlags) Bool(p *bool, flagName, envName, usage string) {
	e.parseEnv(envName, func(v string) (err error) { *p, err = strconv.ParseBool(v); return err })
	e.fs.BoolVar(p, flagName, *p, e.usage(usage, envName))
}

func (e *envFlags) Duration(p *time.Duration, flagName, envName, usage string) {
	e.parseEnv(envName, func(v string) (err error) { *p, err = time.ParseDuration(v); return err })
	e.fs.DurationVar(p, flagName, *p, e.usage(usage, envName))
}

// Text is a flag of a type that reads and writes itself as text (slog.Level).
func (e *envFlags) Text(p interface {
	encoding.TextMarshaler
	encoding.TextUnmarshaler
}, flagName, envName, usage string) {
	e.parseEnv(envName, func(v string) error { return p.UnmarshalText([]byte(v)) })
	e.fs.TextVar(p, flagName, p, e.usage(usage, envName))
}

// parseEnv sets a flag's variable from envName, if set; a value that does
// not parse is the first error parseFlags reports.
func (e *envFlags) parseEnv(envName string, parse func(string) error) {
	if v := e.getenv(envName); v != "" {
		if err := parse(v); err != nil && e.err == nil {
			e.err = fmt.Errorf("%s: %w", envName, err)
		}
	}
}

// Rate parses "interval/burst" (e.g. "6s/20"); "0" disables the limit.
func (e *envFlags) Rate(p *server.RateLimit, flagName, envName, usage string) {
	v := rateValue{p}
	e.parseEnv(envName, v.Set)
	e.fs.Var(v, flagName, e.usage(usage, envName))
}

type rateValue struct{ r *server.RateLimit }

func (v rateValue) String() string {
	if v.r == nil || v.r.Every == 0 {
		return "0"
	}
	return fmt.Sprintf("%s/%d", v.r.Every, v.r.Burst)
}

func (v rateValue) Set(s string) error {
	if s == "0" {
		*v.r = server.RateLimit{}
		return nil
	}
	every, burst, ok := strings.Cut(s, "/")
	d, err1 := time.ParseDuration(every)
	b, err2 := strconv.Atoi(burst)
	if !ok || err1 != nil || err2 != nil || d <= 0 || b <= 0 {
		return fmt.Errorf("want interval/burst like 6s/20, got %q", s)
	}
	*v.r = server.RateLimit{Every: d, Burst: b}
	return nil
}
