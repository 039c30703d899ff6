package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
)

// promScrape is one read of a /metrics page: every sample by its series
// text, name{labels}.
type promScrape map[string]float64

func scrapeURL(t *testing.T, hc *http.Client, url string) promScrape {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET %s: Content-Type %q, want Prometheus's text format", url, ct)
	}
	out := promScrape{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("%s: sample %q: %v", url, line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// get sums the samples of name whose labels include every pair.
func (s promScrape) get(name string, labels ...string) float64 {
	var sum float64
	for series, v := range s {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(rest, l)
		}
		if ok {
			sum += v
		}
	}
	return sum
}

func (s promScrape) names() map[string]bool {
	out := map[string]bool{}
	for series := range s {
		n, _, _ := strings.Cut(series, "{")
		out[n] = true
	}
	return out
}

// TestMetricsE2E runs corral dev with its agent's metrics on a port of
// their own, creates, tunes and disturbs a guest, and reads both /metrics
// pages as Prometheus would: the server's over mutual TLS without a token,
// the agent's in plain HTTP. The placements counter, the API's latency
// count per route, the agent's reconcile actions, drift correction and the
// guest's memory move; every metric deploy/prometheus/alerts.yml names is
// on one of the two pages.
func TestMetricsE2E(t *testing.T) {
	p, cg := startAgentDev(t, []string{"metered"}, "--metrics-addr", "127.0.0.1:0")
	if !strings.HasPrefix(p.agentMetrics, "http://127.0.0.1:") || strings.HasSuffix(p.agentMetrics, ":0/metrics") {
		t.Fatalf("the ready line names agent metrics %q, want http://127.0.0.1:PORT/metrics", p.agentMetrics)
	}
	tlsClient := p.httpClient(10 * time.Second) // a certificate, no token
	plain := &http.Client{Timeout: 10 * time.Second}
	server := func() promScrape { return scrapeURL(t, tlsClient, p.api+"/metrics") }
	agent := func() promScrape { return scrapeURL(t, plain, p.agentMetrics) }
	before := server()
	if resp, err := plain.Get(strings.Replace(p.api, "https://", "http://", 1) + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("the API served /metrics over plain HTTP")
		}
	}

	p.ok("guest", "create", "metered", "--driver", "process", "--memory", "64MiB", "--",
		"/bin/sh", "-c", `x=$(head -c 24000000 /dev/zero | tr '\0' a); sleep 1000`)
	waitGuest(t, p, "metered", "running", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	p.ok("schedinfo", "metered", "--set", "cpu_shares=500")
	waitGuest(t, p, "metered", "cpu_shares 500 applied", func(g *api.GuestView) bool { return g.Applied["cpu_shares"] == "500" })
	if cg.Report().Mode != cgroupdriver.ModeV2 {
		dirs, err := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "metered"})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range dirs {
			if f := filepath.Join(d, "cpu.shares"); fileExistsE2E(f) {
				if err := os.WriteFile(f, []byte("700"), 0); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if resp, err := tlsClient.Get(p.api + "/v1/guests"); err == nil { // no token: refused, counted
		resp.Body.Close()
	}

	var a promScrape
	deadline := time.Now().Add(waitTimeout)
	for {
		a = agent()
		mem := a.get("corral_guest_memory_bytes", `guest="metered"`)
		drift := cg.Report().Mode == cgroupdriver.ModeV2 || a.get("corral_agent_drift_corrections_total", `knob="cpu_shares"`) >= 1
		if mem > 20<<20 && drift {
			t.Logf("agent: guest memory %.0f bytes, cpu %.3fs, actions start=%v tune=%v, drift corrections %v",
				mem, a.get("corral_guest_cpu_seconds_total", `guest="metered"`), a.get("corral_agent_reconcile_actions_total", `op="start"`),
				a.get("corral_agent_reconcile_actions_total", `op="tune"`), a.get("corral_agent_drift_corrections_total"))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's /metrics never showed the guest's memory above 20MiB and the drift corrected: memory %v, drift %v",
				mem, a.get("corral_agent_drift_corrections_total"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v := a.get("corral_agent_reconcile_actions_total", `op="start"`); v < 1 {
		t.Errorf("agent reconcile actions op=start = %v, want at least 1", v)
	}
	if v := a.get("corral_agent_reconcile_actions_total", `op="tune"`); v < 1 {
		t.Errorf("agent reconcile actions op=tune = %v after schedinfo, want at least 1", v)
	}
	if v := a.get("corral_agent_fenced"); v != 0 {
		t.Errorf("corral_agent_fenced = %v, want 0", v)
	}
	if v := a.get("corral_agent_fence_lease_valid"); v != 1 {
		t.Errorf("corral_agent_fence_lease_valid = %v with a fencer running, want 1", v)
	}

	after := server()
	if d := after.get("corral_scheduler_placements_total") - before.get("corral_scheduler_placements_total"); d != 1 {
		t.Errorf("placements rose by %v over one create, want 1", d)
	}
	if v := after.get("corral_scheduler_pending_guests"); v != 0 {
		t.Errorf("pending guests = %v with the one guest placed", v)
	}
	for route, code := range map[string]string{"POST /v1/guests": "200", "POST /v1/guests/{name}/tune": "200", "GET /v1/guests": "401"} {
		count := func(s promScrape) float64 {
			return s.get("corral_http_request_duration_seconds_count", `route="`+route+`"`, `code="`+code+`"`)
		}
		if d := count(after) - count(before); d < 1 {
			t.Errorf("API latency count for %s %s rose by %v, want at least 1", route, code, d)
		}
	}
	t.Logf("server: applied index %v, commits %v, leader changes %v, store %v bytes",
		after.get("corral_raft_applied_index"), after.get("corral_raft_commit_duration_seconds_count"),
		after.get("corral_raft_leader_changes_total"), after.get("corral_event_store_size_bytes"))

	// The sample alert rules name only metrics that exist.
	rules, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	have := after.names()
	for n := range a.names() {
		have[n] = true
	}
	var named []string
	for _, line := range strings.Split(string(rules), "\n") {
		if expr, ok := strings.CutPrefix(strings.TrimSpace(line), "expr:"); ok {
			named = append(named, regexp.MustCompile(`\bcorral_[a-z0-9_]+`).FindAllString(expr, -1)...)
		}
	}
	slices.Sort(named)
	named = slices.Compact(named)
	if len(named) < 20 {
		t.Fatalf("alerts.yml names %d metrics in its expressions, expected the rules to cover at least 20: %v", len(named), named)
	}
	for _, n := range named {
		if !have[n] {
			t.Errorf("deploy/prometheus/alerts.yml uses %s, which neither the server's nor the agent's /metrics has", n)
		}
	}
}

func fileExistsE2E(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
