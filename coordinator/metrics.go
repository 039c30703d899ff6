package coordinator

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, in a registry of its own
// (several servers share a process in tests).
type metrics struct {
	reg    *prometheus.Registry
	denied *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.denied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corral_http_requests_denied_total",
		Help: "API requests refused: unauthenticated, permission denied or rate limited, by route.",
	}, []string{"route", "code"})
	m.reg.MustRegister(m.denied, prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
