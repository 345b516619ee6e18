package server

import (
	"context"
	"sync"
	"sync/atomic"
)

// Lifecycle lets the command shut the server down in the order DESIGN gives
// (docs/ARCHITECTURE.md, "Shutdown order"): BeginShutdown first turns
// /readyz and gRPC health not ready, so load balancers stop sending new
// requests while everything else still serves them; Drain, after
// http.Server.Shutdown, waits for the send pipeline to finish its batches in
// flight, so that every send that reached it is stored and answered before
// the pool closes.
type Lifecycle struct {
	draining atomic.Bool

	mu     sync.Mutex
	drains []func(context.Context) error
}

// BeginShutdown makes the server report not ready from now on. Idempotent.
func (l *Lifecycle) BeginShutdown() { l.draining.Store(true) }

// ShuttingDown reports whether BeginShutdown was called.
func (l *Lifecycle) ShuttingDown() bool { return l.draining.Load() }

// Drain waits until the work the server accepted is done, or ctx ends.
func (l *Lifecycle) Drain(ctx context.Context) error {
	l.mu.Lock()
	drains := l.drains
	l.mu.Unlock()
	for _, d := range drains {
		if err := d(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lifecycle) onDrain(d func(context.Context) error) {
	l.mu.Lock()
	l.drains = append(l.drains, d)
	l.mu.Unlock()
}

// inflight counts work under way and lets a drain wait for none.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil when nobody waits
}

func (f *inflight) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *inflight) done() {
	f.mu.Lock()
	f.n--
	if f.n == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
	f.mu.Unlock()
}

// wait returns once nothing is under way, or ctx's error.
func (f *inflight) wait(ctx context.Context) error {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return nil
	}
	if f.idle == nil {
		f.idle = make(chan struct{})
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
