package server_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// BenchmarkSendMessage is the send path through the real server (Connect
// over HTTP/1.1, PostgreSQL with fsync off as in every test): validation,
// authorization, the one-statement insert and the publish, with no socket
// online. Senders run 8×GOMAXPROCS in parallel.
//
//	go test -run '^$' -bench SendMessage -benchtime 5000x ./server/
func BenchmarkSendMessage(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		e := newEnv(b)
		const pairs = 32
		type pair struct {
			from *client
			to   int64
		}
		ps := make([]pair, pairs)
		for i := range ps {
			a, c := e.register(b, fmt.Sprint("a", i)), e.register(b, fmt.Sprint("b", i))
			makeContacts(b, a, c)
			ps[i] = pair{a, c.ID}
		}
		sendInParallel(b, func(i int64) (*client, *v1.SendMessageRequest) {
			p := ps[i%pairs]
			return p.from, peerText(p.to, fmt.Sprint("d", i), "hello")
		})
	})
	b.Run("group100", func(b *testing.B) {
		e := newEnv(b)
		members := make([]*client, 100)
		for i := range members {
			members[i] = e.register(b, fmt.Sprint("m", i))
		}
		g := openGroup(b, members[0], members[1:]...)
		sendInParallel(b, func(i int64) (*client, *v1.SendMessageRequest) {
			return members[i%100], groupText(g.GetId(), fmt.Sprint("g", i), "hello")
		})
	})
}

// sendInParallel runs b.N sends, the ith as message(i) says, from
// 8×GOMAXPROCS goroutines, and reports messages a second.
func sendInParallel(b *testing.B, message func(i int64) (*client, *v1.SendMessageRequest)) {
	var n atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			from, req := message(n.Add(1))
			if _, err := from.Chat.SendMessage(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
