package main

import (
	"context"
	"fmt"
	"log/slog"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// runGroup: one group of -group-size members, all online with one socket
// each; members 0..senders-1 send in turn. Member 0 owns the group, so
// setup makes it a contact of every other member first (the server lets an
// owner add only contacts).
func runGroup(ctx context.Context, c *config, cl *clients, st *setup, log *slog.Logger) (*result, error) {
	sctx, cancel := setupContext(ctx, c)
	defer cancel()
	ms, err := st.members(sctx, c.groupSize, true)
	if err != nil {
		return nil, err
	}
	if c.logout {
		defer st.logout(context.WithoutCancel(ctx), ms)
	}
	owner := ms[0]
	pairs := make([][2]*member, 0, len(ms)-1)
	for _, m := range ms[1:] {
		pairs = append(pairs, [2]*member{owner, m})
	}
	if err := st.contacts(sctx, pairs); err != nil {
		return nil, err
	}
	g, err := st.group(sctx, owner, ms, fmt.Sprintf("loadgen %d/%d", c.seed, c.groupSize))
	if err != nil {
		return nil, err
	}
	if int(g.GetMemberCount()) != len(ms) {
		return nil, fmt.Errorf("group %d has %d members, want %d", g.GetId(), g.GetMemberCount(), len(ms))
	}
	cancel()

	var sockets []*recvSocket
	plan := &chatPlan{
		scenario: "group",
		params:   fmt.Sprintf("%d members, %d senders, %.0f msg/s, %s, %d B", c.groupSize, c.senders, c.rate, c.duration, c.messageSize),
		online:   ms,
		message: func(i int) (*member, func(*v1.SendMessageRequest)) {
			return ms[i%c.senders], func(r *v1.SendMessageRequest) { r.Target = &v1.SendMessageRequest_GroupId{GroupId: g.GetId()} }
		},
		targets: func(int) []*recvSocket { return sockets },
		bind:    func(s []*recvSocket) { sockets = s },
	}
	return runChat(ctx, c, cl, plan, log)
}
