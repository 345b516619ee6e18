package push

import (
	"context"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
)

// DeliverFunc fans an event out to the receivers on this node. The bus calls
// it; it never blocks. memberIDs is only valid for the duration of the call.
type DeliverFunc func(memberIDs []int64, ev proto.Message)

// Bus carries published events to every node's hub, this node's included:
// Hub.Publish hands events to the bus, and the bus calls each subscribed hub's
// DeliverFunc. The in-process LocalBus serves a single node; a NATS-backed bus
// can replace it (Config.Bus) without touching callers of the Hub.
type Bus interface {
	// Publish sends ev for memberIDs to every subscriber. It must not block on
	// any receiver, nor keep memberIDs or ev after it returns (a remote bus
	// encodes them first); an error means the event did not leave this node.
	Publish(ctx context.Context, memberIDs []int64, ev proto.Message) error
	// Subscribe registers deliver for every event published on the bus until
	// the returned cancel func is called.
	Subscribe(deliver DeliverFunc) (cancel func(), err error)
}

// LocalBus is the in-process Bus: Publish calls every subscriber synchronously.
type LocalBus struct {
	mu   sync.Mutex                     // serialises Subscribe/cancel
	subs atomic.Pointer[[]*DeliverFunc] // copy-on-write, so Publish takes no lock
}

var _ Bus = (*LocalBus)(nil)

// NewLocalBus returns an empty in-process bus.
func NewLocalBus() *LocalBus { return &LocalBus{} }

// Publish delivers ev to every subscriber before returning.
func (b *LocalBus) Publish(ctx context.Context, memberIDs []int64, ev proto.Message) error {
	if p := b.subs.Load(); p != nil {
		for _, d := range *p {
			(*d)(memberIDs, ev)
		}
	}
	return nil
}

// Subscribe adds deliver; cancel removes it and is idempotent.
func (b *LocalBus) Subscribe(deliver DeliverFunc) (func(), error) {
	d := &deliver // the pointer identifies this subscription for cancel
	b.mu.Lock()
	defer b.mu.Unlock()
	var next []*DeliverFunc
	if p := b.subs.Load(); p != nil {
		next = append(next, *p...)
	}
	next = append(next, d)
	b.subs.Store(&next)
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		var next []*DeliverFunc
		for _, x := range *b.subs.Load() {
			if x != d {
				next = append(next, x)
			}
		}
		b.subs.Store(&next)
	}, nil
}
