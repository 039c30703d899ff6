package nodeagent

import (
	"bufio"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// scrapeAgent reads the agent's /metrics: every sample by its series
// text, name{labels}.
func scrapeAgent(t *testing.T, a *Agent) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	a.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d", rec.Code)
	}
	body, _ := io.ReadAll(rec.Body)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// sample finds the one series of name whose labels include every pair.
func sample(m map[string]float64, name string, labels ...string) (float64, bool) {
	for series, v := range m {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if ok {
			return v, true
		}
	}
	return 0, false
}

// TestAgentMetrics runs a real guest under a real agent and checks what
// its /metrics shows: the reconcile actions it took, the guest's memory
// and CPU from the usage report, a drift correction, and the guest's
// series gone once it is.
func TestAgentMetrics(t *testing.T) {
	h := newHost(t)
	a := h.start(t)
	t.Cleanup(func() { h.cleanup(t) })
	def := sleeper("web")
	def.Command = []string{"/bin/sh", "-c", `x=$(head -c 24000000 /dev/zero | tr '\0' a); echo held; while :; do :; done`}
	h.coord.place(def)
	st := waitReport[*events.GuestStarted](t, h.coord, "web", nil)
	var m map[string]float64
	waitFor(t, "the guest's memory on /metrics", 15*time.Second, func() bool {
		m = scrapeAgent(t, a)
		v, _ := sample(m, "corral_guest_memory_bytes", `guest="web"`, `node="`+testNode+`"`)
		return v > 20<<20
	})
	if v, _ := sample(m, "corral_agent_reconcile_actions_total", `op="start"`); v != 1 {
		t.Errorf("reconcile actions op=start = %v, want 1", v)
	}
	if v, ok := sample(m, "corral_agent_fenced"); !ok || v != 0 {
		t.Errorf("corral_agent_fenced = %v (present %v), want 0", v, ok)
	}
	for _, name := range []string{"corral_guest_memory_peak_bytes", "corral_guest_memory_limit_hits_total", "corral_guest_oom_kills_total", "corral_guest_pids", "corral_guest_cpu_user_seconds_total", "corral_guest_cpu_system_seconds_total"} {
		if _, ok := sample(m, name, `guest="web"`); !ok {
			t.Errorf("/metrics has no %s for the guest", name)
		}
	}
	waitFor(t, "the guest's CPU time on /metrics", 15*time.Second, func() bool {
		v, _ := sample(scrapeAgent(t, a), "corral_guest_cpu_seconds_total", `guest="web"`)
		return v > 0.05
	})

	h.coord.tune("web", "cpu_shares", "500")
	waitReport[*events.GuestTuningApplied](t, h.coord, "web", func(p *events.GuestTuningApplied) bool { return p.Value == "500" })
	if v, _ := sample(scrapeAgent(t, a), "corral_agent_reconcile_actions_total", `op="tune"`); v < 1 {
		t.Errorf("reconcile actions op=tune = %v after a tune, want at least 1", v)
	}
	if h.cg.Report().Mode != cgroupdriver.ModeV2 {
		for _, d := range st.Cgroups {
			if f := filepath.Join(d, "cpu.shares"); fileExists(f) {
				if err := os.WriteFile(f, []byte("700"), 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		waitFor(t, "the drift correction on /metrics", 15*time.Second, func() bool {
			v, _ := sample(scrapeAgent(t, a), "corral_agent_drift_corrections_total", `knob="cpu_shares"`)
			return v == 1
		})
	}

	h.coord.undefine("web")
	h.waitGone(t, cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "web"})
	waitFor(t, "the guest's series gone", 15*time.Second, func() bool {
		_, ok := sample(scrapeAgent(t, a), "corral_guest_memory_bytes", `guest="web"`)
		return !ok
	})
	if v, _ := sample(scrapeAgent(t, a), "corral_agent_reconcile_actions_total", `op="destroy"`); v < 1 {
		t.Errorf("reconcile actions op=destroy = %v after undefining, want at least 1", v)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
