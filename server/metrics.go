package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/karlmalone/karlmalone/push"
)

// metrics is one server's Prometheus registry and RPC instruments. Each server
// has its own registry (never the global one): tests run many servers in one
// process, and a counter must count one server.
type metrics struct {
	reg      *prometheus.Registry
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(pool *pgxpool.Pool, hub *push.Hub) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "karlmalone_rpc_handled_total",
			Help: "RPCs completed, by procedure and Connect code (\"ok\" for success).",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "karlmalone_rpc_duration_seconds",
			Help: "Time to handle an RPC, by procedure; for streams, the stream's lifetime.",
			// 1 ms to 10 s: a unary RPC is one or two SQL round trips.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"procedure"}),
	}
	m.reg.MustRegister(m.handled, m.duration,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		hubCollector{hub}, poolCollector{pool},
	)
	return m
}

// handler serves GET /metrics in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// observe records one finished RPC. Procedures are the fixed set the mux
// serves (unknown paths never reach an interceptor), so the label set is bounded.
func (m *metrics) observe(procedure string, start time.Time, err error) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
		// Connect codes bare context errors only after the interceptors.
		if errors.Is(err, context.Canceled) {
			code = connect.CodeCanceled.String()
		} else if errors.Is(err, context.DeadlineExceeded) {
			code = connect.CodeDeadlineExceeded.String()
		}
	}
	m.handled.WithLabelValues(procedure, code).Inc()
	m.duration.WithLabelValues(procedure).Observe(time.Since(start).Seconds())
}

// interceptor counts and times every RPC. It sits outside the error mapping,
// so it sees the codes clients see.
func (m *metrics) interceptor() connect.Interceptor { return metricsInterceptor{m} }

type metricsInterceptor struct{ m *metrics }

func (i metricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		i.m.observe(req.Spec().Procedure, start, err)
		return res, err
	}
}

func (i metricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i metricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		i.m.observe(conn.Spec().Procedure, start, err)
		return err
	}
}

// hubCollector reads the push hub's own counters at scrape time, so nothing
// is counted twice and the hub's hot path carries no metrics code.
type hubCollector struct{ hub *push.Hub }

var (
	descPushConnections = prometheus.NewDesc("karlmalone_push_connections",
		"Open push WebSockets on this node.", nil, nil)
	descPushSubscriptions = prometheus.NewDesc("karlmalone_push_subscriptions",
		"Open ChatService.Subscribe streams on this node.", nil, nil)
	descPushPublished = prometheus.NewDesc("karlmalone_push_events_published_total",
		"Events accepted for delivery by the push hub.", nil, nil)
	descPushDelivered = prometheus.NewDesc("karlmalone_push_events_delivered_total",
		"Event frames written to a socket or handed to a subscription.", nil, nil)
	descPushDropped = prometheus.NewDesc("karlmalone_push_events_dropped_total",
		"Event frames never delivered (queue overflow, closed receiver, write failure).", nil, nil)
	descPushSlow = prometheus.NewDesc("karlmalone_push_slow_consumer_disconnects_total",
		"Receivers disconnected because their queue was full.", nil, nil)
	descPushDeadPeers = prometheus.NewDesc("karlmalone_push_dead_peer_disconnects_total",
		"Sockets dropped because a ping went unanswered.", nil, nil)
)

func (c hubCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPushConnections, descPushSubscriptions, descPushPublished,
		descPushDelivered, descPushDropped, descPushSlow, descPushDeadPeers} {
		ch <- d
	}
}

func (c hubCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.hub.Stats()
	ch <- prometheus.MustNewConstMetric(descPushConnections, prometheus.GaugeValue, float64(s.Connections))
	ch <- prometheus.MustNewConstMetric(descPushSubscriptions, prometheus.GaugeValue, float64(s.Subscriptions))
	ch <- prometheus.MustNewConstMetric(descPushPublished, prometheus.CounterValue, float64(s.Published))
	ch <- prometheus.MustNewConstMetric(descPushDelivered, prometheus.CounterValue, float64(s.Delivered))
	ch <- prometheus.MustNewConstMetric(descPushDropped, prometheus.CounterValue, float64(s.Dropped))
	ch <- prometheus.MustNewConstMetric(descPushSlow, prometheus.CounterValue, float64(s.SlowConsumerDisconnects))
	ch <- prometheus.MustNewConstMetric(descPushDeadPeers, prometheus.CounterValue, float64(s.DeadPeers))
}

// poolCollector reads pgxpool's statistics at scrape time.
type poolCollector struct{ pool *pgxpool.Pool }

func dbDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("karlmalone_db_pool_"+name, help, nil, nil)
}

var (
	descDBMax          = dbDesc("max_conns", "Most connections the pool may open.")
	descDBTotal        = dbDesc("conns", "Open connections (acquired, idle and being opened).")
	descDBAcquired     = dbDesc("acquired_conns", "Connections in use.")
	descDBIdle         = dbDesc("idle_conns", "Idle connections.")
	descDBConstructing = dbDesc("constructing_conns", "Connections being opened.")
	descDBAcquires     = dbDesc("acquires_total", "Successful connection acquisitions.")
	descDBAcquireTime  = dbDesc("acquire_seconds_total", "Total time spent acquiring connections.")
	descDBEmptyAcq     = dbDesc("empty_acquires_total", "Acquisitions that had to wait for a connection (pool exhausted or cold).")
	descDBCanceledAcq  = dbDesc("canceled_acquires_total", "Acquisitions canceled by their context while waiting.")
	descDBNew          = dbDesc("new_conns_total", "Connections opened.")
	descDBLifetime     = dbDesc("max_lifetime_destroys_total", "Connections closed for exceeding their maximum lifetime.")
	descDBIdleDestroy  = dbDesc("max_idle_destroys_total", "Connections closed for exceeding their maximum idle time.")
)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDBMax, descDBTotal, descDBAcquired, descDBIdle, descDBConstructing,
		descDBAcquires, descDBAcquireTime, descDBEmptyAcq, descDBCanceledAcq, descDBNew, descDBLifetime, descDBIdleDestroy} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(descDBMax, float64(s.MaxConns()))
	gauge(descDBTotal, float64(s.TotalConns()))
	gauge(descDBAcquired, float64(s.AcquiredConns()))
	gauge(descDBIdle, float64(s.IdleConns()))
	gauge(descDBConstructing, float64(s.ConstructingConns()))
	counter(descDBAcquires, float64(s.AcquireCount()))
	counter(descDBAcquireTime, s.AcquireDuration().Seconds())
	counter(descDBEmptyAcq, float64(s.EmptyAcquireCount()))
	counter(descDBCanceledAcq, float64(s.CanceledAcquireCount()))
	counter(descDBNew, float64(s.NewConnsCount()))
	counter(descDBLifetime, float64(s.MaxLifetimeDestroyCount()))
	counter(descDBIdleDestroy, float64(s.MaxIdleDestroyCount()))
}
