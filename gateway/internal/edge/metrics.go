package edge

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Route labels for requests that are not a known procedure, so that a
// scan of random paths cannot grow the metrics without bound.
const (
	routeUnknown = "unknown"
	routeJWKS    = "/.well-known/jwks.json"
	// The gateway's own endpoints, which probes and scrapers call every few
	// seconds: counted apart from "unknown", the paths nobody serves, and
	// logged at debug level.
	routeHealth  = "health"
	routeMetrics = "metrics"
)

// metrics are the gateway's Prometheus metrics, in a registry of its own so
// that tests and several gateways in one process do not collide.
type metrics struct {
	registry    *prometheus.Registry
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	upstreamErr *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	fallback    prometheus.Counter
	inFlight    prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_gateway_requests_total",
			Help: "Requests by route and outcome: grpc-<status> for gRPC and gRPC-Web, else the HTTP status (for a Connect stream, the one a unary call would have had).",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "portcullis_gateway_request_duration_seconds",
			Help:    "Time from the request's headers to the end of its response, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		upstreamErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_gateway_upstream_errors_total",
			Help: "Requests that got no response from an upstream instance, by route.",
		}, []string{"route"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_gateway_ratelimit_rejections_total",
			Help: "Requests refused by a rate limit, by route and bucket (ip, user, credential).",
		}, []string{"route", "bucket"}),
		fallback: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portcullis_gateway_ratelimit_local_fallback_total",
			Help: "Rate-limit decisions made locally because the shared (Redis) limiter failed.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portcullis_gateway_in_flight_requests",
			Help: "Requests being served.",
		}),
	}
	m.registry.MustRegister(m.requests, m.duration, m.upstreamErr, m.rejected, m.fallback, m.inFlight,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
