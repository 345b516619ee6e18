package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// chatPlan is what the direct and group scenarios hand to runChat.
type chatPlan struct {
	scenario, params string
	online           []*member // each gets one socket
	// message i: its sender and target. targets(i) are the sockets that must
	// receive it (every online device of every member of its conversation).
	message func(i int) (sender *member, target func(*v1.SendMessageRequest))
	targets func(i int) []*recvSocket
	// bind is called once the sockets are open (online[k] owns sockets[k]).
	bind func(sockets []*recvSocket)
}

// openSockets opens one push socket per member, in parallel, and starts
// their readers. Readers run until the socket ends (closeSockets).
func openSockets(ctx context.Context, c *config, cl *clients, t *tracker, ms []*member, log *slog.Logger) ([]*recvSocket, error) {
	sockets := make([]*recvSocket, len(ms))
	var opened atomic.Int64
	err := forEach(ctx, len(ms), c.setupConcurrency, func(ctx context.Context, i int) error {
		dctx, cancel := context.WithTimeout(ctx, c.rpcTimeout)
		defer cancel()
		ws, err := cl.dialPush(dctx, ms[i].idx, ms[i].token, nil)
		if err != nil {
			return fmt.Errorf("socket of member %d: %w", ms[i].idx, err)
		}
		s := &recvSocket{idx: i, m: ms[i], ws: ws, done: make(chan struct{})}
		sockets[i] = s
		go t.read(s, cl.subprotocol)
		opened.Add(1)
		return nil
	})
	if err != nil {
		closeSockets(sockets)
		return nil, err
	}
	log.Info("setup: sockets open", "sockets", opened.Load())
	return sockets, nil
}

// closeSockets closes sockets with a normal closure, 256 at a time, and waits
// for their readers.
func closeSockets(sockets []*recvSocket) {
	closeEach(sockets, func(s *recvSocket) {
		s.closing.Store(true)
		s.ws.Close(websocket.StatusNormalClosure, "load generator done")
		<-s.done
	})
}

// closeEach runs shut on every non-nil socket, 256 at a time, and returns when
// all have finished.
func closeEach[S any](sockets []*S, shut func(*S)) {
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, s := range sockets {
		if s == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			shut(s)
		})
	}
	wg.Wait()
}

// runChat drives a chat scenario: open sockets, send open loop for the
// duration, wait for deliveries, and account for every message.
func runChat(ctx context.Context, c *config, cl *clients, p *chatPlan, log *slog.Logger) (*result, error) {
	n := min(int(math.Ceil(c.rate*c.duration.Seconds()))+1, c.maxMessages)
	t := newTracker(n)

	sctx, cancel := setupContext(ctx, c)
	sockets, err := openSockets(sctx, c, cl, t, p.online, log)
	cancel()
	if err != nil {
		return nil, err
	}
	p.bind(sockets)

	text := strings.Repeat("x", c.messageSize)
	var sendErrs tally
	var okInWindow atomic.Int64
	loop := &openLoop{
		rate: c.rate, duration: c.duration, maxMessages: n, maxInflight: c.maxInflight,
		send: func(ctx context.Context, i int) {
			sender, target := p.message(i)
			req := &v1.SendMessageRequest{ClientMsgId: t.clientMsgID(i), Content: &v1.SendMessageRequest_Text{Text: text}}
			target(req)
			r := &t.recs[i]
			r.senderID = sender.id
			cctx, cancel := context.WithTimeout(withToken(ctx, sender.token), c.rpcTimeout)
			defer cancel()
			r.state.Store(sendInFlight)
			start := sinceEpoch()
			r.start.Store(start + 1)
			res, err := cl.rpc(sender).chat.SendMessage(cctx, req)
			rtt := time.Duration(sinceEpoch() - start)
			if err != nil {
				r.state.Store(sendFailed)
				sendErrs.add(codeOf(err), fmt.Errorf("message %d from member %d: %w", i, sender.idx, err))
				return
			}
			r.convID, r.seq = res.GetMessage().GetConversationId(), res.GetMessage().GetSeq()
			t.expected.Add(int64(len(p.targets(i))))
			t.stored.Add(1)
			r.state.Store(sendOK)
			if t.measured(start + 1) {
				okInWindow.Add(1)
				t.sendRPC.Record(rtt)
			}
		},
	}

	now := sinceEpoch()
	t.windowStart.Store(now + int64(c.warmup))
	t.windowEnd.Store(now + int64(c.duration))
	watch := newProcWatcher(ctx, c.serverPID, c.pgPID)
	stopProgress := progress(ctx, log, c.progress, func() []any {
		return []any{
			"scheduled", loop.scheduled.Load(), "started", loop.started.Load(), "late", loop.late.Load(),
			"send_errors", sendErrs.total(), "delivered", t.received.Load(), "expected", t.expected.Load(),
			"p99", fmtDur(t.latency.Quantile(0.99)), "dups", t.dups.Load(),
		}
	})
	log.Info("load: sending", "rate", c.rate, "duration", c.duration, "warmup", c.warmup, "max_messages", n)
	loadStart := time.Now()
	prof := startProfiles(ctx, c, c.duration, log)
	scheduled := loop.run(ctx)
	scheduled = max(scheduled, int(loop.scheduled.Load()))
	loadTime := time.Since(loadStart).Round(time.Millisecond)
	if ctx.Err() != nil {
		// Interrupted: rates cover the time the load actually ran.
		t.windowEnd.Store(min(t.windowEnd.Load(), sinceEpoch()))
	}
	proc := watch.Stop()
	// The units of work done in the period the CPU was measured: every send
	// has returned (run waits for them), deliveries still in flight are
	// left to the next period, as a few were at its start.
	stored, received := t.stored.Load(), t.received.Load()
	prof.stop()

	// Deliveries still in flight: wait until every expected one arrived, for
	// at most -drain.
	drainStart := time.Now()
	for t.received.Load() < t.expected.Load() && time.Since(drainStart) < c.drain && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	stopProgress()
	log.Info("load: done", "scheduled", scheduled, "started", loop.started.Load(), "delivered", t.received.Load(),
		"expected", t.expected.Load(), "drain", time.Since(drainStart).Round(time.Millisecond))
	closeSockets(sockets)
	a := t.account(sockets, p.targets, scheduled)

	window := max(time.Duration(t.windowEnd.Load()-t.windowStart.Load()), 0)
	res := &result{
		scenario: p.scenario, params: p.params,
		ops: fmtRate(okInWindow.Load(), window), opsUnit: "msg",
		deliveries: fmtRate(t.inWindow.Load(), window),
		latency:    t.latency.Summary(), latencyOf: "send→push",
		delivered:  fmt.Sprintf("%d/%d", a.delivered, a.expected),
		efficiency: efficiency(proc, stored, received),
		proc:       proc,
	}
	log.Info("efficiency", "cpu", res.efficiency, "stored", stored, "deliveries", received,
		"server_cpu_s", proc.ServerSec, "pg_cpu_s", proc.PGSec, "loadgen_cpu_s", proc.SelfSec)
	errCount := a.failed + int64(a.dropped)
	res.errors = fmt.Sprintf("%d", errCount)
	if errCount > 0 {
		res.errors = fmt.Sprintf("%d (send %s; sockets dropped %d)", errCount, sendErrs.String(), a.dropped)
	}
	sr := t.sendRPC.Summary()
	res.notes = append(res.notes,
		fmt.Sprintf("offered %.0f msg/s; %d sent in %s, late %d, not started %d", c.rate, a.sent+a.failed, loadTime, loop.late.Load(), a.notStarted),
		fmt.Sprintf("SendMessage RTT p50 %s p99 %s", fmtDur(sr.P50), fmtDur(sr.P99)),
		fmt.Sprintf("missing %d, duplicates %d, out of order %d", a.missing, a.dups, a.unordered),
		fmt.Sprintf("%s: %.1f events per push message", cl.subprotocol, float64(a.events)/float64(max(a.frames, 1))))
	if a.unexpected > 0 || a.foreign > 0 {
		res.notes = append(res.notes, fmt.Sprintf("deliveries of failed sends %d, foreign %d", a.unexpected, a.foreign))
	}
	for reason, k := range a.dropReasons {
		res.examples = append(res.examples, fmt.Sprintf("%d sockets dropped: %s", k, reason))
	}
	res.examples = append(res.examples, a.examples...)
	res.examples = append(res.examples, sendErrs.examples...)
	res.failed = a.missing > 0 || a.dups > 0 || a.dropped > 0 || sendErrs.get("internal") > 0 || sendErrs.get("unknown") > 0
	return res, nil
}

// progress logs fields() every interval until stop is called.
func progress(ctx context.Context, log *slog.Logger, every time.Duration, fields func() []any) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				log.Info("progress", append([]any{"elapsed", time.Since(start).Round(time.Second)}, fields()...)...)
			}
		}
	}()
	return func() { cancel(); <-done }
}
