package main

import (
	"context"
	"fmt"
	"log/slog"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// runDirect: -pairs pairs of contacts (members 2p and 2p+1), both online
// with one socket each. Message i belongs to pair i mod P and alternates
// direction every round, so every member sends and receives.
func runDirect(ctx context.Context, c *config, cl *clients, st *setup, log *slog.Logger) (*result, error) {
	sctx, cancel := setupContext(ctx, c)
	defer cancel()
	ms, err := st.members(sctx, 2*c.pairs, true)
	if err != nil {
		return nil, err
	}
	if c.logout {
		defer st.logout(context.WithoutCancel(ctx), ms)
	}
	pairs := make([][2]*member, c.pairs)
	for p := range pairs {
		pairs[p] = [2]*member{ms[2*p], ms[2*p+1]}
	}
	if err := st.contacts(sctx, pairs); err != nil {
		return nil, err
	}
	cancel()

	var sockets []*recvSocket
	P := c.pairs
	plan := &chatPlan{
		scenario: "direct",
		params:   fmt.Sprintf("%d pairs, %.0f msg/s, %s, %d B", c.pairs, c.rate, c.duration, c.messageSize),
		online:   ms,
		message: func(i int) (*member, func(*v1.SendMessageRequest)) {
			p, dir := i%P, (i/P)%2
			from, to := ms[2*p+dir], ms[2*p+1-dir]
			return from, func(r *v1.SendMessageRequest) { r.Target = &v1.SendMessageRequest_PeerId{PeerId: to.id} }
		},
		targets: func(i int) []*recvSocket {
			p := i % P
			return sockets[2*p : 2*p+2]
		},
		bind: func(s []*recvSocket) { sockets = s },
	}
	return runChat(ctx, c, cl, plan, log)
}
