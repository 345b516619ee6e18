package notify

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
)

// Notification tells a member with no online device that messages arrived:
// the newest one, and how many since the last notification (a burst is
// coalesced into one). It carries ids only, no content: the gateway (APNs,
// FCM, …) needs no more to wake the app, which then syncs over the API.
type Notification struct {
	MemberID       int64
	ConversationID int64 // of the newest message
	Seq            int64
	SenderID       int64
	Count          int // messages this notification stands for
	FirstSentAt    time.Time
	LastSentAt     time.Time
}

// Notifier takes notifications for members who are offline. Notify must
// never block: it is called on the send path.
type Notifier interface {
	Notify(Notification)
}

// coalesce merges a newer notification for the same member into a waiting one.
func coalesce(old, n Notification) Notification {
	n.Count += old.Count
	n.FirstSentAt = old.FirstSentAt
	return n
}

// notificationJSON is the body POSTed for a notification. Ids are strings,
// as the API's JSON writes int64.
type notificationJSON struct {
	Type           string    `json:"type"` // "message"
	MemberID       int64     `json:"memberId,string"`
	ConversationID int64     `json:"conversationId,string"`
	Seq            int64     `json:"seq,string"`
	SenderID       int64     `json:"senderId,string"`
	Count          int       `json:"count"`
	FirstSentAt    time.Time `json:"firstSentAt"`
	LastSentAt     time.Time `json:"lastSentAt"`
}

// Webhook is the Notifier that POSTs each notification to a URL (the
// deployment's push gateway), signed, retried, through a bounded queue that
// coalesces per member.
type Webhook struct {
	q *Queue[Notification]
}

var _ Notifier = (*Webhook)(nil)

// NewWebhook starts a webhook notifier for cfg.URL; client nil means
// http.DefaultClient.
func NewWebhook(cfg Config, client *http.Client, log *slog.Logger) *Webhook {
	cfg = cfg.withDefaults()
	s := NewSender(cfg, client)
	deliver := func(ctx context.Context, n Notification) error {
		body, err := json.Marshal(notificationJSON{
			Type: "message", MemberID: n.MemberID, ConversationID: n.ConversationID, Seq: n.Seq, SenderID: n.SenderID,
			Count: n.Count, FirstSentAt: n.FirstSentAt, LastSentAt: n.LastSentAt,
		})
		if err != nil {
			return err
		}
		return s.Deliver(ctx, body)
	}
	return &Webhook{q: NewQueue(cfg.QueueSize, cfg.Workers, deliver, coalesce, log)}
}

// Notify queues n, or merges it into the member's waiting notification.
func (w *Webhook) Notify(n Notification) {
	if n.Count == 0 {
		n.Count = 1
	}
	if n.FirstSentAt.IsZero() {
		n.FirstSentAt = n.LastSentAt
	}
	w.q.Put(n.MemberID, n)
}

// Stats returns the queue's counters.
func (w *Webhook) Stats() Stats { return w.q.Stats() }

// Close stops delivering.
func (w *Webhook) Close() { w.q.Close() }

// Events POSTs integration events (JSON documents the caller encodes) to a
// URL, in the order given as far as its workers allow, signed and retried
// like Webhook's, through a bounded queue; nothing is coalesced.
type Events struct {
	q   *Queue[[]byte]
	key atomic.Int64
}

// NewEvents starts an integration webhook for cfg.URL.
func NewEvents(cfg Config, client *http.Client, log *slog.Logger) *Events {
	cfg = cfg.withDefaults()
	s := NewSender(cfg, client)
	return &Events{q: NewQueue(cfg.QueueSize, cfg.Workers, s.Deliver, nil, log)}
}

// Send queues one event's JSON body; it never blocks.
func (e *Events) Send(body []byte) { e.q.Put(e.key.Add(1), body) }

// Stats returns the queue's counters.
func (e *Events) Stats() Stats { return e.q.Stats() }

// Close stops delivering.
func (e *Events) Close() { e.q.Close() }
