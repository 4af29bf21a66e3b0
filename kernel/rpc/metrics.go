package rpc

import (
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are one server's Prometheus collectors, in a registry of its own
// (no global state: two servers in one test process do not collide).
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
}

func newMetrics(service string) *metrics {
	labels := prometheus.Labels{"service": service}
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "portcullis_rpc_requests_total",
			Help:        "RPCs handled, by procedure and Connect code (ok for success).",
			ConstLabels: labels,
		}, []string{"procedure", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "portcullis_rpc_duration_seconds",
			Help:        "Time to handle an RPC, by procedure.",
			ConstLabels: labels,
			Buckets:     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"procedure"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name:        "portcullis_rpc_in_flight",
			Help:        "RPCs being handled now, by procedure.",
			ConstLabels: labels,
		}, []string{"procedure"}),
	}
	m.registry.MustRegister(m.requests, m.latency, m.inFlight,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observe(procedure string, err error, elapsed time.Duration) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	m.requests.WithLabelValues(procedure, code).Inc()
	m.latency.WithLabelValues(procedure).Observe(elapsed.Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}
