package push

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
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

// BenchmarkCoalesce paces publishes to a group of sockets (one event every
// interval, like a busy group chat) and reports, per CoalesceWindow, the
// process's CPU per delivery (server and clients together: getrusage),
// events per WebSocket message, and the latency from publish to the client's
// read (p50, p99). Run it with -benchtime=Nx (N publishes), e.g.
//
//	go test -run '^$' -bench Coalesce -benchtime 300x ./push/
func BenchmarkCoalesce(b *testing.B) {
	const subs = 500
	for _, interval := range []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond} {
		for _, window := range []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond} {
			b.Run(fmt.Sprintf("every=%v/window=%v", interval, window), func(b *testing.B) {
				e := newEnv(b, Config{CoalesceWindow: window, QueueSize: 4096}, nil)
				ids := make([]int64, subs)
				lat := make([][]int64, subs) // per socket: µs from publish to read
				var done sync.WaitGroup
				for i := range subs {
					ids[i] = int64(i + 1)
					c := e.dial(b, int64(i+1), int64(i+1), SubprotocolProtoBatch)
					done.Add(1)
					go func() {
						defer done.Done()
						for {
							_, msg, err := c.Read(context.Background())
							if err != nil {
								return
							}
							now := nanotime()
							for len(msg) > 0 {
								_, _, ev, k := consumeEvent(msg)
								msg = msg[k:]
								var v wrapperspb.Int64Value
								if err := proto.Unmarshal(ev, &v); err != nil {
									panic(err)
								}
								if v.GetValue() < 0 {
									return // the end
								}
								lat[i] = append(lat[i], (now-v.GetValue())/1e3)
							}
						}
					}()
				}
				var ru0, ru1 syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
				s0 := e.hub.Stats()
				start := time.Now()
				b.ResetTimer()
				for k := range b.N {
					time.Sleep(time.Until(start.Add(time.Duration(k) * interval)))
					e.hub.Publish(ids, wrapperspb.Int64(nanotime()))
				}
				e.hub.Publish(ids, wrapperspb.Int64(-1))
				done.Wait()
				b.StopTimer()
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
				s1 := e.hub.Stats()
				cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime) - syscall.TimevalToNsec(ru0.Utime) +
					syscall.TimevalToNsec(ru1.Stime) - syscall.TimevalToNsec(ru0.Stime))
				var all []int64
				for _, l := range lat {
					all = append(all, l...)
				}
				slices.Sort(all)
				deliveries := float64(b.N * subs)
				b.ReportMetric(float64(cpu.Nanoseconds())/deliveries, "cpu-ns/delivery")
				b.ReportMetric(float64(s1.Delivered-s0.Delivered)/float64(max(s1.Messages-s0.Messages, 1)), "events/message")
				if len(all) > 0 {
					b.ReportMetric(float64(all[len(all)/2]), "p50-µs")
					b.ReportMetric(float64(all[len(all)*99/100]), "p99-µs")
				}
			})
		}
	}
}

// consumeEvent splits the first event off a binary EventBatch.
func consumeEvent(b []byte) (protowire.Number, protowire.Type, []byte, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		panic("bad batch")
	}
	ev, m := protowire.ConsumeBytes(b[n:])
	if m < 0 {
		panic("bad batch")
	}
	return num, typ, ev, n + m
}
