package server

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/push"
)

// Presence: a member is online while it has a push socket or a Subscribe
// stream on any node. The cluster's directory (push.Directory) knows it; this
// file turns its changes into presence events for the member's contacts and
// fellow group members, stores last-seen times, and answers
// GetMemberPresence. docs/CLUSTER.md has the semantics.
//
// Exactly one node acts on each change: the node that saw the member's first
// or last receiver anywhere (push.CauseLocal), or, when a node died with the
// member's last receivers, the surviving node with the smallest id
// (push.CauseNodeGone). Changes are debounced per member: the first change
// opens a window of Config.PresenceDebounce, and when it ends the member's
// state then (as the directory sees it, the whole cluster's) is compared with
// its state before the window. Equal, nothing is pushed: a phone flapping
// between networks costs its contacts at most one event per window.

// presenceParams bounds one GetMemberPresence call.
type presenceParams struct {
	MemberIDs []int64 `name:"member_ids" validate:"min=1,max=200,dive,gt=0"`
}

// GetMemberPresence answers for the members the caller may see
// (ListVisiblePresence); the others are left out, hidden or not.
func (s *MemberServer) GetMemberPresence(ctx context.Context, req *v1.GetMemberPresenceRequest) (*v1.GetMemberPresenceResponse, error) {
	p := presenceParams{MemberIDs: req.GetMemberIds()}
	if err := check(p); err != nil {
		return nil, err
	}
	ids := slices.Compact(slices.Sorted(slices.Values(p.MemberIDs)))
	rows, err := s.q.ListVisiblePresence(ctx, db.ListVisiblePresenceParams{Ids: ids, CallerID: callerFrom(ctx).MemberID})
	if err != nil {
		return nil, err
	}
	visible := make([]int64, len(rows))
	for i, r := range rows {
		visible[i] = r.ID
	}
	online := s.hub.Directory().Presence(visible...)
	res := &v1.GetMemberPresenceResponse{Presences: make([]*v1.Presence, len(rows))}
	for i, r := range rows {
		out := &v1.Presence{MemberId: r.ID, Online: online[i].Online}
		if !out.Online && r.LastSeenAt != nil {
			out.LastSeenAt = timestamppb.New(*r.LastSeenAt)
		}
		res.Presences[i] = out
	}
	return res, nil
}

// presenceNotifier pushes presence events and stores last-seen times.
type presenceNotifier struct {
	b        *base
	dir      *push.Directory
	debounce time.Duration

	mu      sync.Mutex
	pending map[int64]*presenceWindow
	queue   []int64       // members by the end of their window (all windows are as long)
	wake    chan struct{} // capacity 1: the queue was empty and is not
}

// presenceWindow is one member's changes being debounced.
type presenceWindow struct {
	ends      time.Time
	wasOnline bool      // before the window: what its watchers last heard
	offAt     time.Time // its last going offline in the window, if any
}

// startPresence watches the hub's directory until the hub shuts down.
func startPresence(b *base, debounce time.Duration) {
	n := &presenceNotifier{
		b: b, dir: b.hub.Directory(), debounce: debounce,
		pending: make(map[int64]*presenceWindow),
		wake:    make(chan struct{}, 1),
	}
	stop := n.dir.Watch(n.changed)
	go func() {
		defer stop()
		n.run(b.hub.Done())
	}()
}

// changed is the directory's watcher: it must return at once.
func (n *presenceNotifier) changed(ch push.Change) {
	switch ch.Cause {
	case push.CauseLocal:
	case push.CauseNodeGone:
		if !n.firstAlive() {
			return
		}
	default: // another node acts (CauseRemote), or nobody (CauseSync)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	w, ok := n.pending[ch.Member]
	if !ok {
		w = &presenceWindow{ends: time.Now().Add(n.debounce), wasOnline: !ch.Online}
		n.pending[ch.Member] = w
		n.queue = append(n.queue, ch.Member)
		if len(n.queue) == 1 {
			select {
			case n.wake <- struct{}{}:
			default:
			}
		}
	}
	if !ch.Online {
		w.offAt = ch.At
	}
}

// firstAlive says whether this node has the smallest id of the nodes alive:
// the one that acts for the members of a node that died.
func (n *presenceNotifier) firstAlive() bool {
	s, ok := n.b.hub.BusStats()
	if !ok {
		return true
	}
	for _, p := range n.dir.Peers() {
		if p.ID < s.NodeID {
			return false
		}
	}
	return true
}

// run ends the windows as they come due, until done.
func (n *presenceNotifier) run(done <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n.mu.Lock()
		if len(n.queue) == 0 {
			n.mu.Unlock()
			select {
			case <-n.wake:
			case <-done:
				return
			}
			continue
		}
		if wait := time.Until(n.pending[n.queue[0]].ends); wait > 0 {
			n.mu.Unlock()
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-done:
				return
			}
			continue
		}
		now := time.Now()
		var due []int64
		var windows []*presenceWindow
		for len(n.queue) > 0 && !n.pending[n.queue[0]].ends.After(now) {
			m := n.queue[0]
			due, windows = append(due, m), append(windows, n.pending[m])
			delete(n.pending, m)
			n.queue = n.queue[1:]
		}
		n.mu.Unlock()
		n.flush(due, windows)
	}
}

// flush ends the windows of due: one statement for the last-seen times, one
// for the watchers of every member whose state changed, and one event per
// such member to its watchers.
func (n *presenceNotifier) flush(due []int64, windows []*presenceWindow) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := n.dir.Presence(due...)
	// Last seen first: a watcher that reads presence on hearing the event
	// finds the time stored.
	var offline []int64
	var lastOff time.Time
	for i, m := range due {
		if w := windows[i]; !now[i].Online && !w.offAt.IsZero() {
			offline = append(offline, m)
			if w.offAt.After(lastOff) {
				lastOff = w.offAt
			}
		}
	}
	if len(offline) > 0 {
		if err := n.b.q.SetMembersLastSeen(ctx, db.SetMembersLastSeenParams{Ids: offline, At: &lastOff}); err != nil {
			n.b.log.Warn("presence: store last seen", "members", len(offline), "err", err)
		}
	}
	var changed []int64 // those whose state differs from before their window
	at := make(map[int64]int, len(due))
	for i, m := range due {
		if now[i].Online != windows[i].wasOnline {
			changed = append(changed, m)
			at[m] = i
		}
	}
	if len(changed) == 0 {
		return // flaps, merged away
	}
	rows, err := n.b.q.ListPresenceWatchers(ctx, changed)
	if err != nil {
		n.b.log.Warn("presence: list watchers", "members", len(changed), "err", err)
		return
	}
	// Rows come grouped by member: one event per member, to its watchers.
	for len(rows) > 0 {
		m, k := rows[0].MemberID, 1
		for k < len(rows) && rows[k].MemberID == m {
			k++
		}
		watchers := make([]int64, k)
		for j := range k {
			watchers[j] = rows[j].WatcherID
		}
		rows = rows[k:]
		i := at[m]
		p := &v1.Presence{MemberId: m, Online: now[i].Online}
		if !p.Online && !windows[i].offAt.IsZero() {
			p.LastSeenAt = timestamppb.New(windows[i].offAt)
		}
		n.b.publish(watchers, &v1.Event{Kind: &v1.Event_Presence{Presence: p}})
	}
}
