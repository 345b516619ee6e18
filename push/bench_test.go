package push

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// BenchmarkPublish measures the hub's own work for one event to `subs`
// members, each with one in-memory receiver (a Subscription): the bus hop,
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
				s, err := h.Subscribe(b.Context(), Principal{int64(i + 1), int64(i + 1)})
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
// loopback: publish, encode once, writer goroutine, message write, and the
// clients' reads (which share the CPUs), per subprotocol: one event per
// message, or batches. Publishes go in windows of 32 that the clients must
// finish before the next, so no queue overflows; within a window a batched
// socket's writer finds what queued while it wrote. ns/delivery is the time
// per event per socket.
func BenchmarkPublishWebSocket(b *testing.B) {
	const window = 32
	for _, sp := range []string{SubprotocolProto, SubprotocolProtoBatch} {
		for _, subs := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("%s/subs=%d", sp, subs), func(b *testing.B) {
				e := newEnv(b, Config{QueueSize: 2 * window}, nil)
				ids := make([]int64, subs)
				got := make(chan int, subs*window)
				for i := range subs {
					ids[i] = int64(i + 1)
					c := e.dial(b, int64(i+1), int64(i+1), sp)
					go func() {
						for {
							_, msg, err := c.Read(context.Background())
							if err != nil {
								return
							}
							got <- countEvents(sp, msg)
						}
					}()
				}
				ev := wrapperspb.String("hello, this is a typical short chat message")
				b.ReportAllocs()
				pending := 0
				flush := func() {
					for n := pending * subs; n > 0; {
						n -= <-got
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
				s := e.hub.Stats()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/delivery")
				b.ReportMetric(float64(s.Delivered)/float64(max(s.Messages, 1)), "events/message")
			})
		}
	}
}

// countEvents counts the events of one message of subprotocol sp.
func countEvents(sp string, msg []byte) int {
	if sp != SubprotocolProtoBatch {
		return 1
	}
	n := 0
	for len(msg) > 0 {
		_, _, k := protowire.ConsumeField(msg)
		if k < 0 {
			panic("bad batch")
		}
		msg = msg[k:]
		n++
	}
	return n
}
