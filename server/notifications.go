package server

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/notify"
)

// Offline notifications and integration webhooks (docs/CHAT-FEATURES.md).
// Both are optional (Deps.Notifier, Deps.Integrations) and both only queue:
// package notify delivers, off the send path, and drops what its bounded
// queues cannot hold rather than slow a sender.

// IntegrationSink takes integration events as JSON (notify.Events).
type IntegrationSink interface {
	Send(body []byte)
}

// notifyOffline hands a notification for each recipient of a stored message
// who has no online device anywhere (push.Directory, which spans the
// cluster) to the notifier. The sender is never notified of its own message.
// It runs on the send pipeline's callback: Presence is one read lock, Notify
// never blocks.
func (b *base) notifyOffline(row db.CreateMessageRow) {
	if b.notifier == nil {
		return
	}
	ids := make([]int64, 0, len(row.RecipientIds))
	for _, id := range row.RecipientIds {
		// TODO(h14a mute): skip a member who muted the conversation, unless
		// the message mentions it; the mute state is not on main yet.
		if id != row.SenderID {
			ids = append(ids, id)
		}
	}
	for _, p := range b.hub.Directory().Presence(ids...) {
		if !p.Online {
			b.notifier.Notify(notify.Notification{
				MemberID: p.Member, ConversationID: row.ConversationID, Seq: row.Seq, SenderID: row.SenderID,
				Count: 1, FirstSentAt: row.SentAt, LastSentAt: row.SentAt,
			})
		}
	}
}

// integrate sends ev to the integration webhook when it is one a business
// would build on: messages, recalls, and the life of groups and members.
// The body is the Event as push clients see it in JSON.
func (b *base) integrate(ev *v1.Event) {
	if b.integrations == nil {
		return
	}
	switch ev.GetKind().(type) {
	case *v1.Event_Message, *v1.Event_MessageRecalled,
		*v1.Event_GroupCreated, *v1.Event_GroupUpdated, *v1.Event_GroupDissolved,
		*v1.Event_MemberJoined, *v1.Event_MemberLeft, *v1.Event_MemberRemoved, *v1.Event_MemberRoleChanged,
		*v1.Event_MemberDeleted:
	default:
		return
	}
	body, err := protojson.Marshal(ev)
	if err != nil {
		b.log.Error("integration event: encode", "err", err)
		return
	}
	b.integrations.Send(body)
}

// webhookCollector exports a webhook queue's counters as metrics named
// karlmalone_<name>_….
type webhookCollector struct {
	src                                                     interface{ Stats() notify.Stats }
	queued, accepted, coalesced, dropped, delivered, failed *prometheus.Desc
}

func newWebhookCollector(name, what string, src interface{ Stats() notify.Stats }) webhookCollector {
	d := func(metric, help string) *prometheus.Desc {
		return prometheus.NewDesc("karlmalone_"+name+"_"+metric, what+": "+help, nil, nil)
	}
	return webhookCollector{
		src:       src,
		queued:    d("queued", "deliveries waiting now."),
		accepted:  d("accepted_total", "taken into the queue, coalesced ones included."),
		coalesced: d("coalesced_total", "merged into a delivery already waiting."),
		dropped:   d("dropped_total", "dropped because the queue was full."),
		delivered: d("delivered_total", "delivered."),
		failed:    d("failed_total", "given up on after every retry."),
	}
}

func (c webhookCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queued, c.accepted, c.coalesced, c.dropped, c.delivered, c.failed} {
		ch <- d
	}
}

func (c webhookCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Stats()
	ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(s.Queued))
	for _, m := range []struct {
		d *prometheus.Desc
		v int64
	}{{c.accepted, s.Accepted}, {c.coalesced, s.Coalesced}, {c.dropped, s.Dropped}, {c.delivered, s.Delivered}, {c.failed, s.Failed}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v))
	}
}

// registerWebhookMetrics adds the counters of the notifier and the
// integration webhook, when they have them.
func registerWebhookMetrics(reg *prometheus.Registry, d Deps, log *slog.Logger) {
	for _, w := range []struct {
		name, what string
		src        any
	}{{"notify", "offline notifications", d.Notifier}, {"webhook", "integration events", d.Integrations}} {
		if s, ok := w.src.(interface{ Stats() notify.Stats }); ok {
			reg.MustRegister(newWebhookCollector(w.name, w.what, s))
		} else if w.src != nil {
			log.Info("webhook without counters: no metrics", "name", w.name)
		}
	}
}
