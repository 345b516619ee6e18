// Command loadgen puts a running KarlMalone server under load through its
// public API only — Connect RPCs with binary protobuf, and /v1/push
// WebSockets — the way real clients do, and reports throughput, end-to-end
// latency, delivery completeness and the server's memory and CPU.
//
//	loadgen -scenario idle   -sockets 20000
//	loadgen -scenario direct -pairs 500 -rate 1000 -duration 20s
//	loadgen -scenario group  -group-size 1000 -senders 10 -rate 20
//	loadgen -scenario login  -login-clients 64 -duration 10s
//
// Start the server with -insecure-fast-password-hash and the rate limits off
// (-register-rate 0 -login-rate-addr 0 -login-rate-phone-addr 0) for large setups;
// loadgen does not assume it, setup is only slower otherwise. `make bench`
// runs the standard set against a private PostgreSQL.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// A second Ctrl-C kills at once; the first ends the run with a report.
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		if ctx.Err() != nil {
			os.Exit(130) // interrupted: tell a calling script to stop too
		}
		os.Exit(1)
	}
}

// config is everything the flags set.
type config struct {
	addr             string
	scenario         string
	seed             int
	members          int
	sockets          int
	pairs            int
	groupSize        int
	senders          int
	rate             float64
	duration         time.Duration
	warmup           time.Duration
	drain            time.Duration
	loginClients     int
	setupConcurrency int
	setupTimeout     time.Duration
	maxInflight      int
	maxMessages      int
	messageSize      int
	rpcTimeout       time.Duration
	serverPID        int
	pgPID            int
	sourceAddrs      int
	progress         time.Duration
	header           bool
	logout           bool
	failOnLoss       bool
	profileDir       string
	serverDebug      string
	rpcProtocol      string
	rpcConns         int
	pushEncoding     string
}

const usageText = `loadgen puts a running KarlMalone server under load through its public API
(Connect RPCs with binary protobuf, /v1/push WebSockets) and prints a Markdown
table to stdout; progress goes to stderr.

Scenarios (-scenario):
  idle    open -sockets authenticated sockets (members are logged in once each,
          several sockets per session when -sockets > -members), hold them for
          -duration answering the server's pings, and report the sockets held
          and the server's RSS per socket.
  direct  -pairs pairs of contacts chat 1:1 at -rate messages/s in total (open
          loop), both sides online; end-to-end latency to the peer's socket.
  group   one group of -group-size online members; -senders of them send at
          -rate messages/s in total; latency to every other member's socket.
  login   -login-clients clients log in again and again for -duration;
          logins/s, latency and errors by kind.

Members' phones follow from -seed, so a rerun with the same seed reuses them
(and their contacts and group). Setup is through the API too; start the server
with -insecure-fast-password-hash and -register-rate 0 -login-rate-addr 0
-login-rate-phone-addr 0 for large setups.

Flags:
`

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		io.WriteString(stderr, usageText)
		fs.PrintDefaults()
	}
	c := &config{}
	fs.StringVar(&c.addr, "addr", "http://127.0.0.1:5288", "server base URL")
	fs.StringVar(&c.scenario, "scenario", "direct", "what to run: idle, direct, group or login")
	fs.IntVar(&c.seed, "seed", 1, "derives members' phones (0–99999); the same seed reuses the same members, contacts and group")
	fs.IntVar(&c.members, "members", 1000, "members to log in for idle (sockets are spread over them) and to log in as for login; direct and group use exactly what they need")
	fs.IntVar(&c.sockets, "sockets", 1000, "idle: sockets to open and hold")
	fs.IntVar(&c.pairs, "pairs", 100, "direct: pairs of contacts chatting (2×pairs members, one socket each)")
	fs.IntVar(&c.groupSize, "group-size", 100, "group: members of the group, all online (the server caps groups, 2000 by default)")
	fs.IntVar(&c.senders, "senders", 10, "group: members that send")
	fs.Float64Var(&c.rate, "rate", 100, "direct, group: messages per second in total, scheduled open loop")
	fs.DurationVar(&c.duration, "duration", 20*time.Second, "how long the load runs (idle: how long sockets are held once open)")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "start of the load that rates and latencies leave out")
	fs.DurationVar(&c.drain, "drain", 10*time.Second, "direct, group: most time to wait after the last send for deliveries still in flight")
	fs.IntVar(&c.loginClients, "login-clients", 32, "login: concurrent clients logging in")
	fs.IntVar(&c.setupConcurrency, "setup-concurrency", 32, "parallel RPCs and socket handshakes during setup")
	fs.DurationVar(&c.setupTimeout, "setup-timeout", 10*time.Minute, "most time setup (registration, contacts, group, opening sockets) may take")
	fs.IntVar(&c.maxInflight, "max-inflight", 512, "direct, group: most sends in flight; a send that finds none free starts late")
	fs.IntVar(&c.maxMessages, "max-messages", 1_000_000, "direct, group: most messages one run sends")
	fs.IntVar(&c.messageSize, "message-size", 64, "direct, group: bytes of text per message (1–4000)")
	fs.DurationVar(&c.rpcTimeout, "rpc-timeout", 10*time.Second, "deadline of each RPC")
	fs.IntVar(&c.serverPID, "server-pid", 0, "pid of the server process (bin/karlmalone, not devpg): report its RSS and CPU from /proc")
	fs.IntVar(&c.pgPID, "pg-pid", 0, "pid of the PostgreSQL postmaster (first line of its postmaster.pid): report the CPU of it and its backends")
	fs.IntVar(&c.sourceAddrs, "source-addrs", 255, "spread client connections over 127.0.0.1–127.0.0.N (loopback servers only; 0: let the system choose)")
	fs.DurationVar(&c.progress, "progress", 5*time.Second, "interval of progress lines on stderr")
	fs.BoolVar(&c.header, "header", true, "print the table header (turn off to append rows to an earlier table)")
	fs.BoolVar(&c.logout, "logout", true, "log out the sessions setup opened when done (the login scenario's own logins stay)")
	fs.StringVar(&c.rpcProtocol, "rpc-protocol", rpcHTTP1, "RPC transport: http1 (one TCP connection per request in flight, like many independent clients) or h2c (HTTP/2 without TLS, requests multiplexed over -rpc-conns connections, as mobile clients do)")
	fs.IntVar(&c.rpcConns, "rpc-conns", 8, "h2c: connections to multiplex RPCs over; member i uses connection i mod N")
	fs.StringVar(&c.pushEncoding, "push-encoding", "proto.batch", "/v1/push subprotocol: proto.batch or json.batch (an EventBatch per message), proto or json (one Event per message)")
	fs.StringVar(&c.profileDir, "profile-dir", "", "direct, group: write CPU profiles of the load period here: the load generator's, and the server's with -server-debug")
	fs.StringVar(&c.serverDebug, "server-debug", "", "the server's -debug-listen address (host:port), for its CPU profile with -profile-dir")
	fs.BoolVar(&c.failOnLoss, "fail-on-loss", true, "exit 1 when messages were lost, sockets failed or the server answered internal/unknown")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	switch c.scenario {
	case "idle", "direct", "group", "login":
	default:
		errs = append(errs, fmt.Errorf("-scenario %q: want idle, direct, group or login", c.scenario))
	}
	check(c.seed >= 0 && c.seed < 100_000, "-seed must be in 0–99999")
	check(c.members > 0, "-members must be positive")
	check(c.sockets > 0, "-sockets must be positive")
	check(c.pairs > 0, "-pairs must be positive")
	check(c.groupSize >= 2, "-group-size must be at least 2")
	check(c.senders > 0 && c.senders <= c.groupSize, "-senders must be in 1..group-size")
	check(c.rate > 0, "-rate must be positive")
	check(c.duration > 0, "-duration must be positive")
	check(c.warmup >= 0 && c.warmup < c.duration, "-warmup must be shorter than -duration")
	check(c.loginClients > 0, "-login-clients must be positive")
	check(c.setupConcurrency > 0, "-setup-concurrency must be positive")
	check(c.maxInflight > 0, "-max-inflight must be positive")
	check(c.maxMessages > 0, "-max-messages must be positive")
	check(c.messageSize >= 1 && c.messageSize <= 4000, "-message-size must be in 1–4000")
	check(c.rpcTimeout > 0, "-rpc-timeout must be positive")
	check(c.progress > 0, "-progress must be positive")
	check(c.rpcProtocol == rpcHTTP1 || c.rpcProtocol == rpcH2C, "-rpc-protocol must be %s or %s", rpcHTTP1, rpcH2C)
	check(c.rpcConns > 0, "-rpc-conns must be positive")
	_, ok := pushEncodings[c.pushEncoding]
	check(ok, "-push-encoding must be proto.batch, json.batch, proto or json")
	return c, errors.Join(errs...)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("scenario", c.scenario)
	raiseFileLimit(log)

	cl, err := newClients(clientOptions{
		addr: c.addr, sources: c.sourceAddrs, maxConns: c.maxInflight + c.setupConcurrency,
		protocol: c.rpcProtocol, h2Conns: c.rpcConns, pushEncoding: c.pushEncoding,
	})
	if err != nil {
		return err
	}
	if err := waitReady(ctx, c.addr); err != nil {
		return err
	}
	if c.serverPID > 0 {
		if _, err := readProc(c.serverPID); err != nil {
			return fmt.Errorf("-server-pid: %w", err)
		}
	}
	if c.pgPID > 0 {
		if _, err := treeCPUTicks(c.pgPID); err != nil {
			return fmt.Errorf("-pg-pid: %w", err)
		}
	}
	// What else keeps the machine busy (the server idling, other jobs):
	// loaded neighbours make every number below worse.
	busyBefore := hostBusy(ctx, time.Second)
	st := &setup{c: cl, log: log, seed: c.seed, concurrency: c.setupConcurrency, timeout: c.rpcTimeout}

	var res *result
	switch c.scenario {
	case "idle":
		res, err = runIdle(ctx, c, cl, st, log)
	case "direct":
		res, err = runDirect(ctx, c, cl, st, log)
	case "group":
		res, err = runGroup(ctx, c, cl, st, log)
	case "login":
		res, err = runLogin(ctx, c, cl, st, log)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", c.scenario, err)
	}
	res.notes = append(res.notes, fmt.Sprintf("host busy %.0f%% before the run", busyBefore))
	if res.proc.Err != nil {
		log.Warn("server stats incomplete", "err", res.proc.Err)
	}
	writeTable(stdout, c.header, []*result{res})
	if ctx.Err() != nil {
		return errors.New("interrupted: the table above covers the run until the interrupt")
	}
	if res.failed && c.failOnLoss {
		return errors.New("the run lost messages, failed sockets or saw server errors (see the table)")
	}
	return nil
}

// waitReady checks GET /readyz once, so a missing server fails fast and clearly.
func waitReady(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(addr, "/")+"/readyz", nil)
	if err != nil {
		return fmt.Errorf("readyz: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("server not reachable at %s: %w", addr, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("server at %s not ready: GET /readyz: %s", addr, res.Status)
	}
	return nil
}

// setupContext bounds a scenario's setup by -setup-timeout.
func setupContext(ctx context.Context, c *config) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.setupTimeout)
}
