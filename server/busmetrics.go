package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/karlmalone/karlmalone/push"
)

// busCollector reads the bus between nodes (NATS) at scrape time; a server
// registers it only when its hub has a bus.
type busCollector struct{ hub *push.Hub }

func busDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("karlmalone_bus_"+name, help, nil, nil)
}

var (
	descBusConnected    = busDesc("connected", "1 while this node is connected to NATS; 0 while it serves its own members only (degraded).")
	descBusPeers        = busDesc("peers", "Other nodes this node knows.")
	descBusDisconnects  = busDesc("disconnects_total", "Connections to NATS lost.")
	descBusReconnects   = busDesc("reconnects_total", "Connections to NATS recovered.")
	descBusSent         = busDesc("events_published_total", "Event messages published to other nodes (one per node and event).")
	descBusReceived     = busDesc("events_received_total", "Event messages received from other nodes.")
	descBusDropped      = busDesc("events_dropped_total", "Event messages for other nodes that could not be sent (NATS away): their clients resync.")
	descBusBad          = busDesc("bad_messages_total", "Received bus messages that did not parse.")
	descBusRevokesSent  = busDesc("revocations_sent_total", "Session revocations broadcast to the other nodes.")
	descBusRevokesRecv  = busDesc("revocations_received_total", "Session revocations heard from the other nodes.")
	descBusDirResyncs   = busDesc("directory_resyncs_total", "Requests for another node's full directory state.")
	descBusSlowConsumer = busDesc("slow_consumer_drops_total", "Bus messages the NATS client dropped because this node read them too slowly.")
)

func (c busCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBusConnected, descBusPeers, descBusDisconnects, descBusReconnects,
		descBusSent, descBusReceived, descBusDropped, descBusBad, descBusRevokesSent, descBusRevokesRecv,
		descBusDirResyncs, descBusSlowConsumer} {
		ch <- d
	}
}

func (c busCollector) Collect(ch chan<- prometheus.Metric) {
	s, _ := c.hub.BusStats()
	connected := 0.0
	if s.Connected {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(descBusConnected, prometheus.GaugeValue, connected)
	ch <- prometheus.MustNewConstMetric(descBusPeers, prometheus.GaugeValue, float64(s.Peers))
	for _, x := range []struct {
		d *prometheus.Desc
		v uint64
	}{
		{descBusDisconnects, s.Disconnects}, {descBusReconnects, s.Reconnects},
		{descBusSent, s.EventsSent}, {descBusReceived, s.EventsReceived}, {descBusDropped, s.EventsDropped},
		{descBusBad, s.BadMessages}, {descBusRevokesSent, s.RevocationsSent}, {descBusRevokesRecv, s.RevocationsReceived},
		{descBusDirResyncs, s.DirectoryResyncs}, {descBusSlowConsumer, s.SlowConsumer},
	} {
		ch <- prometheus.MustNewConstMetric(x.d, prometheus.CounterValue, float64(x.v))
	}
}
