package push

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

// BenchmarkPublish measures the hub's own work for one event to `subs`
// members, each with one in-memory receiver (a Subscription): the frame,
// shard lookup and lock, a non-blocking enqueue per receiver, and the
// receiver's dequeue (Next), done every `batch` publishes in the same
// goroutine, as a consumer that keeps up would. No socket I/O and no
// scheduling; see BenchmarkPublishWebSocket for the whole path.
func BenchmarkPublish(b *testing.B) {
	const batch = fifoKeep
	for _, subs := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			h := NewHub(Config{QueueSize: 4 * batch}, testLogger())
			defer h.Shutdown(context.Background())
			ids := make([]int64, subs)
			all := make([]*Subscription, subs)
			for i := range subs {
				ids[i] = int64(i + 1)
				s, err := h.Subscribe(b.Context(), Principal{MemberID: int64(i + 1), SessionID: int64(i + 1)})
				if err != nil {
					b.Fatal(err)
				}
				all[i] = s
			}
			ev := wrapperspb.String("hello, this is a typical short chat message")
			drain := func(n int) {
				for _, s := range all {
					for range n {
						if _, err := s.Next(b.Context()); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			b.ReportAllocs()
			pending := 0
			for b.Loop() {
				h.Publish(ids, ev)
				if pending++; pending == batch {
					drain(pending)
					pending = 0
				}
			}
			if s := h.Stats(); s.SlowConsumerDisconnects != 0 {
				b.Fatalf("overflow: %+v", s)
			}
		})
	}
}

// BenchmarkPublishWebSocket measures the whole path to real sockets on
// loopback: publish, encode once, writer goroutine, frame write, and the
// clients' reads (which share the CPUs). Publishes go in windows that the
// clients must finish before the next, so no queue overflows.
func BenchmarkPublishWebSocket(b *testing.B) {
	const window = 32
	for _, subs := range []int{1, 100} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			e := newEnv(b, Config{QueueSize: 2 * window}, nil)
			ids := make([]int64, subs)
			got := make(chan struct{}, subs*window)
			for i := range subs {
				ids[i] = int64(i + 1)
				c := e.dial(b, int64(i+1), int64(i+1))
				go func() {
					for {
						if _, _, err := c.Read(context.Background()); err != nil {
							return
						}
						got <- struct{}{}
					}
				}()
			}
			ev := wrapperspb.String("hello, this is a typical short chat message")
			b.ReportAllocs()
			pending := 0
			flush := func() {
				for range pending * subs {
					<-got
				}
				pending = 0
			}
			for b.Loop() {
				e.hub.Publish(ids, ev)
				if pending++; pending == window {
					flush()
				}
			}
			flush()
		})
	}
}

// BenchmarkDirectoryRoute measures the bus's routing of one event: a group of
// 10,000 online members spread over 20 other nodes, in a directory of
// 1,000,000 online members (docs/CLUSTER.md's sizing). Each op splits the
// recipients into one batch per node.
func BenchmarkDirectoryRoute(b *testing.B) {
	const online, nodes, group = 1_000_000, 20, 10_000
	d := newDirectory()
	for n := range nodes {
		slot, _ := d.addPeer(fmt.Sprint(n), "", fmt.Sprintf("ev.%d", n))
		var on []memberSince
		for m := n; m < online; m += nodes {
			on = append(on, memberSince{member: int64(m), since: 1})
		}
		d.peerChanged(slot, on, nil, CauseSync)
	}
	ids := make([]int64, group)
	for i := range ids {
		ids[i] = int64(i * 97) // 97 and 20 are coprime: spread over every node
	}
	b.ReportAllocs()
	for b.Loop() {
		if got := d.route(ids); len(got) != nodes {
			b.Fatalf("%d batches", len(got))
		}
	}
}
