package push

import (
	"math/bits"
	"sync"
	"time"
)

// maxPeers is how many other nodes a directory tracks at once: one bit each in
// a member's entry. A node that would be the 65th is ignored (and logged):
// its members get no pushes from this node until a slot frees up, when a dead
// node expires or leaves. See docs/CLUSTER.md for the sizing.
const maxPeers = 64

// Directory knows which members are online on which nodes. It is presence:
// a member is online while it has a push socket or a Subscribe stream on any
// node.
//
// This node's part is kept by the hub as receivers come and go; the other
// nodes' parts, by the bus (NATSBus) from what those nodes announce. Without a
// bus the directory knows this node only. It never touches a database:
// "last seen" of an offline member is the server's to store, from the
// changes it watches (Watch).
type Directory struct {
	mu     sync.RWMutex
	local  map[int64]int64       // member → online here since (Unix ms)
	remote map[int64]remoteEntry // member → the other nodes hosting it
	peers  [maxPeers]peerSlot    // the other nodes, by slot
	npeers int

	// The bus's view of this node's own changes (announce is true once a
	// bus is attached): what it has not sent yet, and the channel that is
	// closed once it has.
	announce bool
	pending  map[int64]bool // member → online; the last change wins
	flushed  chan struct{}
	kick     chan struct{} // capacity 1: pending is not empty

	// Watchers, and the changes not yet handed to them, in order.
	watchMu  sync.Mutex
	watchers []*func(Change)
	queue    []Change      // under mu, appended only while watching
	watching bool          // under mu: there are watchers
	wake     chan struct{} // capacity 1: queue is not empty
	stop     chan struct{} // closed by close
	stopOnce sync.Once
}

// remoteEntry is an online member as the other nodes reported it.
type remoteEntry struct {
	nodes uint64 // bit i: peers[i] hosts the member
	since int64  // Unix ms, the earliest report among them
}

// peerSlot is another node the directory tracks.
type peerSlot struct {
	id      string // "" when free
	name    string
	subject string // where its events go
	members int
}

// Presence is whether a member is online and since when. Since is the zero
// time for a member that is offline, and approximate (to a second or so) for
// a member online on another node.
type Presence struct {
	Member int64
	Online bool
	Since  time.Time
	Nodes  int // how many nodes host its receivers (this one included)
}

// Cause says why a member's presence changed.
type Cause uint8

const (
	// CauseLocal: its first receiver anywhere opened, or its last one closed,
	// on this node. Exactly one node sees each such change (up to races
	// between nodes within a few milliseconds), which makes it the node to
	// act on it, for example to tell the member's contacts.
	CauseLocal Cause = iota + 1
	// CauseRemote: another node announced it (that node saw CauseLocal).
	CauseRemote
	// CauseNodeGone: the last node hosting it left or stopped answering; no
	// node saw CauseLocal, so the surviving nodes must agree on who acts
	// (for example the one with the smallest NodeID among those alive).
	CauseNodeGone
	// CauseSync: learned from another node's full state, when this node
	// started, reconnected or missed announcements.
	CauseSync
)

func (c Cause) String() string {
	switch c {
	case CauseLocal:
		return "local"
	case CauseRemote:
		return "remote"
	case CauseNodeGone:
		return "node gone"
	case CauseSync:
		return "sync"
	}
	return "unknown"
}

// Change is a member going online or offline anywhere in the cluster.
type Change struct {
	Member int64
	Online bool
	At     time.Time
	Cause  Cause
}

// PeerInfo describes another node in the directory.
type PeerInfo struct {
	ID, Name string
	Members  int
}

func newDirectory() *Directory {
	return &Directory{
		local:  make(map[int64]int64),
		remote: make(map[int64]remoteEntry),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
}

// Presence looks members up.
func (d *Directory) Presence(members ...int64) []Presence {
	out := make([]Presence, len(members))
	d.mu.RLock()
	defer d.mu.RUnlock()
	for i, m := range members {
		p := Presence{Member: m}
		since := int64(0)
		if s, ok := d.local[m]; ok {
			p.Nodes, since = 1, s
		}
		if e, ok := d.remote[m]; ok {
			p.Nodes += bits.OnesCount64(e.nodes)
			if since == 0 || e.since < since {
				since = e.since
			}
		}
		if p.Online = p.Nodes > 0; p.Online {
			p.Since = time.UnixMilli(since)
		}
		out[i] = p
	}
	return out
}

// Online counts the members online anywhere, and those online on this node.
func (d *Directory) Online() (anywhere, here int) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	anywhere = len(d.remote)
	for m := range d.local {
		if _, ok := d.remote[m]; !ok {
			anywhere++
		}
	}
	return anywhere, len(d.local)
}

// Peers lists the other nodes this one knows.
func (d *Directory) Peers() []PeerInfo {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]PeerInfo, 0, d.npeers)
	for _, p := range d.peers {
		if p.id != "" {
			out = append(out, PeerInfo{ID: p.id, Name: p.name, Members: p.members})
		}
	}
	return out
}

// Watch calls fn with every change of a member's presence, one at a time and
// in the order the directory saw them, from a goroutine of its own. fn must
// return quickly (debounce elsewhere): changes queue up while it runs. The
// returned func stops the calls; it is idempotent.
func (d *Directory) Watch(fn func(Change)) (stop func()) {
	p := &fn
	d.watchMu.Lock()
	d.watchers = append(d.watchers, p)
	first := len(d.watchers) == 1
	d.watchMu.Unlock()
	d.mu.Lock()
	d.watching = true
	d.mu.Unlock()
	if first {
		go d.dispatch()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			d.watchMu.Lock()
			defer d.watchMu.Unlock()
			for i, x := range d.watchers {
				if x == p {
					d.watchers = append(d.watchers[:i:i], d.watchers[i+1:]...)
					break
				}
			}
		})
	}
}

// dispatch hands queued changes to the watchers until close.
func (d *Directory) dispatch() {
	for {
		select {
		case <-d.wake:
		case <-d.stop:
			return
		}
		d.mu.Lock()
		batch := d.queue
		d.queue = nil
		d.mu.Unlock()
		d.watchMu.Lock()
		ws := d.watchers
		d.watchMu.Unlock()
		for _, c := range batch {
			for _, w := range ws {
				(*w)(c)
			}
		}
	}
}

// changed queues c for the watchers; d.mu is held.
func (d *Directory) changed(member int64, online bool, at int64, cause Cause) {
	if !d.watching {
		return
	}
	d.queue = append(d.queue, Change{Member: member, Online: online, At: time.UnixMilli(at), Cause: cause})
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *Directory) close() {
	d.stopOnce.Do(func() { close(d.stop) })
	d.stopAnnouncing()
}

// setLocal records that member's first receiver on this node opened (online)
// or its last one closed. The hub calls it under the member's shard lock, so
// the calls for one member come in order. With a bus attached it returns a
// channel that is closed once the other nodes have been told (or the bus
// gave up trying); nil otherwise.
func (d *Directory) setLocal(member int64, online bool, now int64) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, elsewhere := d.remote[member]
	if online {
		d.local[member] = now
	} else {
		delete(d.local, member)
	}
	if !elsewhere {
		d.changed(member, online, now, CauseLocal)
	}
	if !d.announce {
		return nil
	}
	d.pending[member] = online
	select {
	case d.kick <- struct{}{}:
	default:
	}
	return d.flushed
}

// startAnnouncing makes setLocal record changes for the bus; it returns the
// channel that signals pending changes.
func (d *Directory) startAnnouncing() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.announce = true
	d.pending = make(map[int64]bool)
	d.flushed = make(chan struct{})
	d.kick = make(chan struct{}, 1)
	return d.kick
}

// stopAnnouncing releases whoever waits for an announcement.
func (d *Directory) stopAnnouncing() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.announce {
		return
	}
	d.announce = false
	d.pending = nil
	close(d.flushed)
	d.flushed = nil
}

// takePending returns this node's changes since the last call, and the
// channel to close once they are sent.
func (d *Directory) takePending() (on []memberSince, off []int64, sent chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.announce {
		return nil, nil, nil
	}
	for m, online := range d.pending {
		if online {
			on = append(on, memberSince{member: m, since: d.local[m]})
		} else {
			off = append(off, m)
		}
	}
	clear(d.pending)
	sent = d.flushed
	d.flushed = make(chan struct{})
	return on, off, sent
}

// localState returns this node's online members.
func (d *Directory) localState() []memberSince {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]memberSince, 0, len(d.local))
	for m, s := range d.local {
		out = append(out, memberSince{member: m, since: s})
	}
	return out
}

func (d *Directory) localCount() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.local)
}

// nodeBatch is the part of an event's recipients that one other node hosts.
type nodeBatch struct {
	subject string
	ids     []int64
}

// route splits memberIDs by the other nodes that host them. Members online
// on no other node are left out, so an event for this node alone costs a map
// lookup per recipient and nothing more.
func (d *Directory) route(memberIDs []int64) []nodeBatch {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if len(d.remote) == 0 {
		return nil
	}
	var lists [maxPeers][]int64
	var used uint64
	for _, id := range memberIDs {
		e, ok := d.remote[id]
		if !ok {
			continue
		}
		used |= e.nodes
		for m := e.nodes; m != 0; m &= m - 1 {
			i := bits.TrailingZeros64(m)
			lists[i] = append(lists[i], id)
		}
	}
	if used == 0 {
		return nil
	}
	out := make([]nodeBatch, 0, bits.OnesCount64(used))
	for m := used; m != 0; m &= m - 1 {
		i := bits.TrailingZeros64(m)
		out = append(out, nodeBatch{subject: d.peers[i].subject, ids: lists[i]})
	}
	return out
}

// addPeer gives another node a slot; ok is false when every slot is taken.
func (d *Directory) addPeer(id, name, subject string) (slot int, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, p := range d.peers {
		if p.id == id {
			return i, true
		}
	}
	for i := range d.peers {
		if d.peers[i].id == "" {
			d.peers[i] = peerSlot{id: id, name: name, subject: subject}
			d.npeers++
			return i, true
		}
	}
	return -1, false
}

func (d *Directory) renamePeer(slot int, name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peers[slot].name = name
}

func (d *Directory) peerCount() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.npeers
}

func (d *Directory) peerMembers(slot int) int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.peers[slot].members
}

// removePeer forgets a node that left or died, and every member it hosted.
func (d *Directory) removePeer(slot int, now int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clearPeer(slot, nil, now, CauseNodeGone)
	d.peers[slot] = peerSlot{}
	d.npeers--
}

// clearPeer drops the slot's bit from every member not in keep. It scans the
// whole remote map: a node leaves or resyncs rarely, and a per-node index
// would double the directory's memory. d.mu is held.
func (d *Directory) clearPeer(slot int, keep map[int64]int64, now int64, cause Cause) {
	if d.peers[slot].members == 0 {
		return
	}
	bit := uint64(1) << slot
	for m, e := range d.remote {
		if e.nodes&bit == 0 {
			continue
		}
		if _, ok := keep[m]; ok {
			continue
		}
		d.peers[slot].members--
		if e.nodes &^= bit; e.nodes != 0 {
			d.remote[m] = e
			continue
		}
		delete(d.remote, m)
		if _, ok := d.local[m]; !ok {
			d.changed(m, false, now, cause)
		}
	}
}

// peerChanged applies a node's announced changes.
func (d *Directory) peerChanged(slot int, on []memberSince, off []int64, cause Cause) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peerOnline(slot, on, cause)
	bit := uint64(1) << slot
	now := time.Now().UnixMilli()
	for _, m := range off {
		e, ok := d.remote[m]
		if !ok || e.nodes&bit == 0 {
			continue
		}
		d.peers[slot].members--
		if e.nodes &^= bit; e.nodes != 0 {
			d.remote[m] = e
			continue
		}
		delete(d.remote, m)
		if _, ok := d.local[m]; !ok {
			d.changed(m, false, now, cause)
		}
	}
}

// peerOnline adds members to a node; d.mu is held.
func (d *Directory) peerOnline(slot int, on []memberSince, cause Cause) {
	bit := uint64(1) << slot
	for _, x := range on {
		e, ok := d.remote[x.member]
		if e.nodes&bit == 0 {
			d.peers[slot].members++
		}
		_, here := d.local[x.member]
		if !ok || x.since < e.since {
			e.since = x.since
		}
		e.nodes |= bit
		d.remote[x.member] = e
		if !ok && !here {
			d.changed(x.member, true, x.since, cause)
		}
	}
}

// replacePeer sets a node's members to state (a snapshot).
func (d *Directory) replacePeer(slot int, state []memberSince) {
	keep := make(map[int64]int64, len(state))
	for _, x := range state {
		keep[x.member] = x.since
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clearPeer(slot, keep, time.Now().UnixMilli(), CauseSync)
	d.peerOnline(slot, state, CauseSync)
}
