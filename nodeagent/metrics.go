package nodeagent

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/corral-dev/corral/cgroupdriver"
)

// agentMetrics are the agent's Prometheus metrics, in a registry of its
// own. A scrape reads no cgroup file: the per-guest series are the
// counters the last usage report read (every Config.UsageInterval), and
// the rest is what the agent counted as it worked.
//
// The per-guest series carry the guest's name as a label: one series per
// family for each guest running on the node, so a node's cardinality is
// its guest count times eight. A guest's series go when the agent
// destroys or forgets it, or when it stops running (the next report).
type agentMetrics struct {
	reg     *prometheus.Registry
	actions *prometheus.CounterVec
	passes  prometheus.Counter
	drift   *prometheus.CounterVec
	lease   prometheus.Gauge
	guests  *guestCollector
}

func newAgentMetrics(a *Agent) *agentMetrics {
	m := &agentMetrics{reg: prometheus.NewRegistry(), guests: newGuestCollector(a.cfg.NodeID)}
	m.actions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corral_agent_reconcile_actions_total",
		Help: "Actions the agent's reconcile passes took, by op (start, stop, tune, destroy, freeze, thaw, report-started, report-exited, forget, remove-orphan).",
	}, []string{"op"})
	m.passes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "corral_agent_reconcile_passes_total",
		Help: "Reconcile passes the agent made with its desired state known.",
	})
	m.drift = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corral_agent_drift_corrections_total",
		Help: "Knobs found changed behind the agent's back and written again, by knob (a failed correction is logged and reported as guest.drift, not counted).",
	}, []string{"knob"})
	fenced := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "corral_agent_fenced",
		Help: "1 while the agent has lost the coordinator for --fence-timeout and holds its guests frozen, 0 otherwise.",
	}, func() float64 { return b2f(a.fenced.Load()) })
	m.lease = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "corral_agent_fence_lease_valid",
		Help: "1 when the agent last found its fencer running and its lease current, so that it may act on guests; 0 otherwise; 1 without a fencer (--fencer=false).",
	})
	if a.fence == nil {
		m.lease.Set(1)
	}
	m.reg.MustRegister(m.actions, m.passes, m.drift, fenced, m.lease, m.guests,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// MetricsHandler serves the agent's metrics in Prometheus's format. cmd
// serves it on --metrics-addr.
func (a *Agent) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{})
}

// guestSample is what one usage report read of a guest.
type guestSample struct {
	gen   uint64
	stats cgroupdriver.Stats
}

// guestCollector exports the latest sample of every running guest. The
// run loop replaces the samples; scrapes read them.
type guestCollector struct {
	node                                        string
	cpu, user, system, mem, peak, hits, oom, px *prometheus.Desc

	mu      sync.Mutex
	samples map[string]guestSample
}

func newGuestCollector(node string) *guestCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"guest"}, prometheus.Labels{"node": node})
	}
	return &guestCollector{
		node:    node,
		cpu:     d("corral_guest_cpu_seconds_total", "CPU time the guest's groups used (cpuacct.usage, cpu.stat usage_usec)."),
		user:    d("corral_guest_cpu_user_seconds_total", "User CPU time of the guest's groups."),
		system:  d("corral_guest_cpu_system_seconds_total", "System CPU time of the guest's groups."),
		mem:     d("corral_guest_memory_bytes", "Memory the guest's group uses now (memory.usage_in_bytes, memory.current)."),
		peak:    d("corral_guest_memory_peak_bytes", "Highest memory use of the guest's group (memory.max_usage_in_bytes, memory.peak)."),
		hits:    d("corral_guest_memory_limit_hits_total", "Times the guest ran into its memory limits: v1 memory.failcnt plus memory.memsw.failcnt, v2 memory.events max."),
		oom:     d("corral_guest_oom_kills_total", "Processes of the guest the kernel's OOM killer killed (memory.events oom_kill, memory.oom_control)."),
		px:      d("corral_guest_pids", "Processes and threads in the guest's group (pids.current)."),
		samples: map[string]guestSample{},
	}
}

func (c *guestCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.cpu, c.user, c.system, c.mem, c.peak, c.hits, c.oom, c.px} {
		ch <- d
	}
}

func (c *guestCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, s := range c.samples {
		st := s.stats
		for _, m := range []struct {
			d *prometheus.Desc
			t prometheus.ValueType
			v float64
		}{
			{c.cpu, prometheus.CounterValue, float64(st.CPU.TotalNs) / 1e9},
			{c.user, prometheus.CounterValue, float64(st.CPU.UserNs) / 1e9},
			{c.system, prometheus.CounterValue, float64(st.CPU.SystemNs) / 1e9},
			{c.mem, prometheus.GaugeValue, float64(st.Memory.Usage)},
			{c.peak, prometheus.GaugeValue, float64(st.Memory.Peak)},
			{c.hits, prometheus.CounterValue, float64(st.LimitHits)},
			{c.oom, prometheus.CounterValue, float64(st.Memory.Events.OOMKill)},
			{c.px, prometheus.GaugeValue, float64(st.Pids.Current)},
		} {
			ch <- prometheus.MustNewConstMetric(m.d, m.t, m.v, name)
		}
	}
}

// replace makes samples the guests' series: those not in it go.
func (c *guestCollector) replace(samples map[string]guestSample) {
	c.mu.Lock()
	c.samples = samples
	c.mu.Unlock()
}

// forget drops a guest's series at once.
func (c *guestCollector) forget(name string) {
	c.mu.Lock()
	delete(c.samples, name)
	c.mu.Unlock()
}
