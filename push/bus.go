package push

import (
	"time"
)

// Bus joins this node's hub to the hubs of the other nodes of a cluster
// (Config.Bus). Without one a hub serves its own node alone. The hub
// delivers to its own receivers itself; the bus carries only what other
// nodes need: events for the members they host, session revocations, and the
// directory of who is online where. NATSBus is the implementation; the
// directory's remote part can be written only from this package, so a Bus is
// implemented here.
//
// Delivery is at most once: a bus drops what it cannot send (counting it) and
// never blocks the hub for long. History is the truth: clients that miss an
// event resync by seq (docs/CLUSTER.md).
type Bus interface {
	// Start attaches the bus to this node: from then on it delivers what
	// other nodes send through n and keeps n.Directory() up to date. The hub
	// calls it once, from NewHub. An error means the bus will not work at
	// all (bad configuration); an unreachable server is not an error, the
	// bus keeps trying.
	Start(n Node) error
	// Publish sends an event for memberIDs to every other node that hosts
	// one of them: one message per such node, naming only its members.
	// encoded returns the event's protobuf binary encoding, computed once
	// and shared with this node's binary sockets; it is called only when
	// another node needs the event. Publish must not keep memberIDs.
	Publish(memberIDs []int64, encoded func() ([]byte, error)) error
	// CloseSession tells every other node to close the session's receivers.
	CloseSession(sessionID int64) error
	// Stats reports the bus's state and counters.
	Stats() BusStats
	// Close leaves the cluster (the other nodes forget this node's members
	// at once) and releases the connection. The hub calls it from Shutdown.
	Close() error
}

// Node is what a bus delivers to: this node's hub.
type Node interface {
	// Deliver fans an event that another node published out to this node's
	// receivers of memberIDs. event is the protobuf binary encoding of the
	// event, which the hub may keep.
	Deliver(memberIDs []int64, event []byte)
	// CloseLocalSession closes this node's receivers of a session that was
	// revoked on another node.
	CloseLocalSession(sessionID int64)
	// Directory is this node's directory, which the bus keeps.
	Directory() *Directory
	// Resync tells this node's receivers, and those of the members in
	// remote on other nodes, that events for them may have been lost since
	// then (the bus was down): their clients resync over RPC.
	Resync(since time.Time, remote []int64)
	// BusConnected says that the bus reached its server (up) or lost it.
	BusConnected(up bool)
}

// BusStats is a snapshot of a bus's state, for /metrics and /readyz.
type BusStats struct {
	// Connected is false while the bus cannot reach its server: this node
	// still serves its own members, but events for members on other nodes
	// are dropped and the directory goes stale (degraded, not failing).
	Connected bool
	// Since is when Connected last changed.
	Since time.Time
	// NodeID is this node's id on the bus (new at every start); Peers, the
	// other nodes it knows.
	NodeID string
	Peers  int
	// Disconnects and Reconnects count connection losses and recoveries.
	Disconnects, Reconnects uint64
	// EventsSent and EventsReceived count event messages (one per node
	// and event, whatever the number of members); EventsDropped, those that
	// could not be sent; BadMessages, received messages that did not parse.
	EventsSent, EventsReceived, EventsDropped, BadMessages uint64
	// RevocationsSent and RevocationsReceived count session revocations.
	RevocationsSent, RevocationsReceived uint64
	// DirectoryResyncs counts full-state requests to other nodes (at start,
	// after a gap in a node's announcements, for a node seen for the first time).
	DirectoryResyncs uint64
	// SlowConsumer counts messages the client library dropped because
	// this node did not read them fast enough.
	SlowConsumer uint64
}

// hubNode is the hub as a bus sees it.
type hubNode struct{ h *Hub }

func (n hubNode) Deliver(memberIDs []int64, event []byte) {
	n.h.deliverEncoded(memberIDs, event)
}

func (n hubNode) CloseLocalSession(sessionID int64) { n.h.remoteRevoke(sessionID) }

func (n hubNode) Directory() *Directory { return n.h.dir }

func (n hubNode) Resync(since time.Time, remote []int64) { n.h.resync(since, remote) }

func (n hubNode) BusConnected(up bool) { n.h.busConnected(up) }
