package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// member is one load-generator identity. Its phone and password follow from
// the seed and its index, so a rerun with the same seed finds it again.
type member struct {
	idx   int
	phone string
	id    int64
	token string
}

func phoneFor(seed, idx int) string {
	// E.164: "+" and at most 15 digits. "+9" + 5 seed digits + 8 index digits.
	return fmt.Sprintf("+9%05d%08d", seed%100_000, idx)
}

func passwordFor(seed int) string { return fmt.Sprintf("loadgen-%d-password", seed) }

// setup builds the population a scenario needs, through the public API only.
type setup struct {
	c           *clients
	log         *slog.Logger
	seed        int
	concurrency int
	timeout     time.Duration // per RPC
}

// members registers members 0..n-1 in parallel (an existing phone is simply
// logged in) and, with login, opens one session each.
func (s *setup) members(ctx context.Context, n int, login bool) ([]*member, error) {
	ms := make([]*member, n)
	for i := range ms {
		ms[i] = &member{idx: i, phone: phoneFor(s.seed, i)}
	}
	var registered, existed atomic.Int64
	stop := s.progress(ctx, "members", func() []any {
		return []any{"registered", registered.Load(), "existed", existed.Load(), "of", n}
	})
	defer stop()
	err := forEach(ctx, n, s.concurrency, func(ctx context.Context, i int) error {
		m := ms[i]
		err := s.retry(ctx, func(ctx context.Context) error {
			res, err := s.c.rpc(m).member.Register(ctx, &v1.RegisterRequest{
				Phone: m.phone, Password: passwordFor(s.seed), Nickname: fmt.Sprintf("lg%d-%d", s.seed, i),
				Memo: "load generator",
			})
			if err == nil {
				m.id = res.GetMember().GetId()
			}
			return err
		})
		switch {
		case err == nil:
			registered.Add(1)
		case connect.CodeOf(err) == connect.CodeAlreadyExists:
			existed.Add(1)
		default:
			return fmt.Errorf("register member %d (%s): %w", i, m.phone, err)
		}
		if !login {
			return nil
		}
		return s.login(ctx, m)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("setup: members ready", "members", n, "registered", registered.Load(), "existed", existed.Load(), "logged_in", login)
	return ms, nil
}

func (s *setup) login(ctx context.Context, m *member) error {
	return s.retry(ctx, func(ctx context.Context) error {
		res, err := s.c.rpc(m).member.Login(ctx, &v1.LoginRequest{Phone: m.phone, Password: passwordFor(s.seed), DeviceName: "loadgen"})
		if err != nil {
			return fmt.Errorf("log in member %d (%s): %w", m.idx, m.phone, err)
		}
		m.id, m.token = res.GetMember().GetId(), res.GetAccessToken()
		return nil
	})
}

// logout ends the sessions that setup opened, so reruns do not pile them up.
func (s *setup) logout(ctx context.Context, ms []*member) {
	var failed atomic.Int64
	_ = forEach(ctx, len(ms), s.concurrency, func(ctx context.Context, i int) error {
		if ms[i].token == "" {
			return nil
		}
		ctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		if _, err := s.c.rpc(ms[i]).member.Logout(withToken(ctx, ms[i].token), &v1.LogoutRequest{}); err != nil {
			failed.Add(1)
		}
		return nil
	})
	if n := failed.Load(); n > 0 {
		s.log.Warn("setup: some logouts failed", "failed", n, "of", len(ms))
	}
}

// contacts makes each pair contacts: a sends a request, b accepts it. Pairs
// that already are contacts (or have a pending request) are settled too.
func (s *setup) contacts(ctx context.Context, pairs [][2]*member) error {
	var made, had atomic.Int64
	stop := s.progress(ctx, "contacts", func() []any {
		return []any{"made", made.Load(), "already", had.Load(), "of", len(pairs)}
	})
	defer stop()
	err := forEach(ctx, len(pairs), s.concurrency, func(ctx context.Context, i int) error {
		a, b := pairs[i][0], pairs[i][1]
		var req *v1.FriendRequest
		err := s.retry(ctx, func(ctx context.Context) error {
			res, err := s.c.rpc(a).contact.SendFriendRequest(withToken(ctx, a.token), &v1.SendFriendRequestRequest{MemberId: b.id, Note: "load generator"})
			req = res.GetRequest()
			return err
		})
		if connect.CodeOf(err) == connect.CodeAlreadyExists {
			// Already contacts, or a request is pending. Asking back accepts
			// a pending request; if they are contacts it says so again.
			err = s.retry(ctx, func(ctx context.Context) error {
				res, err := s.c.rpc(b).contact.SendFriendRequest(withToken(ctx, b.token), &v1.SendFriendRequestRequest{MemberId: a.id})
				req = res.GetRequest()
				return err
			})
			switch {
			case connect.CodeOf(err) == connect.CodeAlreadyExists:
				had.Add(1)
				return nil
			case err != nil:
				return fmt.Errorf("friend request %d→%d (reverse): %w", b.idx, a.idx, err)
			case req.GetStatus() == v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_ACCEPTED:
				made.Add(1)
				return nil
			}
			a, b = b, a // a new pending request b→a: a accepts it below
		} else if err != nil {
			return fmt.Errorf("friend request %d→%d: %w", a.idx, b.idx, err)
		}
		err = s.retry(ctx, func(ctx context.Context) error {
			_, err := s.c.rpc(b).contact.RespondFriendRequest(withToken(ctx, b.token), &v1.RespondFriendRequestRequest{RequestId: req.GetId(), Accept: true})
			return err
		})
		if err != nil {
			return fmt.Errorf("accept friend request %d→%d: %w", a.idx, b.idx, err)
		}
		made.Add(1)
		return nil
	})
	if err != nil {
		return err
	}
	s.log.Info("setup: contacts ready", "pairs", len(pairs), "made", made.Load(), "already", had.Load())
	return nil
}

// group finds the owner's group called name, or creates it, and makes every
// member of ms (all contacts of the owner) a member of it.
func (s *setup) group(ctx context.Context, owner *member, ms []*member, name string) (*v1.Group, error) {
	ctx = withToken(ctx, owner.token)
	var ids []int64
	for _, m := range ms {
		if m != owner {
			ids = append(ids, m.id)
		}
	}
	var found *v1.Group
	page := ""
	for found == nil {
		var res *v1.ListMyGroupsResponse
		err := s.retry(ctx, func(ctx context.Context) error {
			var err error
			res, err = s.c.rpc(owner).group.ListMyGroups(ctx, &v1.ListMyGroupsRequest{PageSize: 100, PageToken: page})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("list groups of member %d: %w", owner.idx, err)
		}
		for _, g := range res.GetGroups() {
			if g.GetName() == name && g.GetOwnerId() == owner.id {
				found = g
			}
		}
		if page = res.GetNextPageToken(); page == "" {
			break
		}
	}
	if found == nil {
		first := ids[:min(len(ids), maxInviteesPerCall)]
		err := s.retry(ctx, func(ctx context.Context) error {
			res, err := s.c.rpc(owner).group.CreateGroup(ctx, &v1.CreateGroupRequest{Name: name, MemberIds: first, Notice: "load generator"})
			found = res.GetGroup()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("create group %q with %d members: %w", name, len(first)+1, err)
		}
		s.log.Info("setup: group created", "group_id", found.GetId(), "members", found.GetMemberCount())
	}
	if int(found.GetMemberCount()) == len(ids)+1 {
		s.log.Info("setup: group ready", "group_id", found.GetId(), "members", found.GetMemberCount())
		return found, nil
	}
	// The rest, a call's worth at a time; those already in are skipped by the server.
	g := found
	for chunk := range slices.Chunk(ids, maxInviteesPerCall) {
		err := s.retry(ctx, func(ctx context.Context) error {
			res, err := s.c.rpc(owner).group.AddGroupMembers(ctx, &v1.AddGroupMembersRequest{GroupId: found.GetId(), MemberIds: chunk})
			if res.GetGroup() != nil {
				g = res.GetGroup()
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("add %d members to group %d: %w", len(chunk), found.GetId(), err)
		}
	}
	s.log.Info("setup: group completed", "group_id", g.GetId(), "members", g.GetMemberCount())
	return g, nil
}

// maxInviteesPerCall is the server's default -group-max-invitees: the most
// members one CreateGroup or AddGroupMembers call may add.
const maxInviteesPerCall = 200

// retry runs fn with a per-call timeout, retrying the codes that mean "try
// again later" (rate limits, an unavailable or conflicting database) with
// backoff, for at most a minute. Other errors return at once.
func (s *setup) retry(ctx context.Context, fn func(ctx context.Context) error) error {
	backoff := 100 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		err := fn(cctx)
		cancel()
		switch connect.CodeOf(err) {
		case connect.CodeResourceExhausted, connect.CodeUnavailable, connect.CodeAborted:
		default:
			if err == nil || !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
				return err
			}
		}
		if time.Now().Add(backoff).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 3*time.Second)
	}
}

// progress logs fields() every 5 s until the returned stop is called.
func (s *setup) progress(ctx context.Context, step string, fields func() []any) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.log.Info("setup: "+step, fields()...)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// forEach runs fn(0..n-1) on at most conc goroutines; the first error
// cancels the rest and is returned.
func forEach(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range max(min(conc, n), 1) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}
