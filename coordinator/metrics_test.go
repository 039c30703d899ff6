package coordinator

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/pki"
)

// scrape is one read of /metrics: every sample by its series text,
// name{labels} as Prometheus's text format writes it.
type scrape map[string]float64

func parseScrape(t *testing.T, body string) scrape {
	t.Helper()
	out := scrape{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("not a sample line: %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// value sums the samples of name whose labels include every pair given
// as `key="value"`; ok is false when there is none.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	var sum float64
	found := false
	for series, v := range s {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				match = false
			}
		}
		if match {
			sum += v
			found = true
		}
	}
	return sum, found
}

func (s scrape) must(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.value(name, labels...)
	if !ok {
		t.Fatalf("/metrics has no %s%v", name, labels)
	}
	return v
}

func (sc *secureCluster) scrape(s *Server, hc *http.Client, token string) (scrape, answer) {
	sc.t.Helper()
	a := call(sc.t, hc, "GET", sc.url(s, "/metrics"), token, nil)
	if a.status != http.StatusOK {
		return nil, a
	}
	return parseScrape(sc.t, a.body), a
}

// TestServerMetricsMove scrapes a real server over mutual TLS without a
// token, creates and tunes guests, and checks that the families move: the
// placements counter, the pending gauge, the API's latency per route, raft
// and the event store.
func TestServerMetricsMove(t *testing.T) {
	sc := newSecureCluster(t, 1)
	sc.setup() // n1, n2 and g1, placed
	_, leader := sc.leader()
	probe := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "probe"})
	before, a := sc.scrape(leader, probe, "")
	if before == nil {
		t.Fatalf("GET /metrics with a client certificate and no token: %d %s", a.status, a.body)
	}
	if n := call(t, sc.httpClient(pki.Identity{}), "GET", sc.url(leader, "/metrics"), "", nil); !n.refused() {
		t.Errorf("GET /metrics without a certificate answered %d, want a refusal (the API needs TLS)", n.status)
	}

	alice := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "alice"})
	create := func(name, mem string) {
		t.Helper()
		a := call(t, alice, "POST", sc.url(leader, "/v1/guests"), sc.token["write"], map[string]any{"name": name, "driver": "process", "memory": mem, "command": []string{"sleep", "1000"}})
		if a.status != http.StatusOK {
			t.Fatalf("create %s: %d %s", name, a.status, a.body)
		}
	}
	create("g2", "64MiB")
	create("huge", "1TiB") // fits no node: stays pending
	if a := call(t, alice, "POST", sc.url(leader, "/v1/guests/g2/tune"), sc.token["write"], map[string]any{"set": map[string]string{"cpu_shares": "512"}}); a.status != http.StatusOK {
		t.Fatalf("tune g2: %d %s", a.status, a.body)
	}
	if a := call(t, alice, "GET", sc.url(leader, "/v1/guests/g2"), "", nil); !a.refused() {
		t.Fatalf("GET /v1/guests/g2 without a token: %d, want a refusal", a.status)
	}

	var after scrape
	WaitFor(t, 10*time.Second, "the pending gauge to show the guest that fits nowhere", func() bool {
		after, _ = sc.scrape(leader, probe, "")
		v, _ := after.value("corral_scheduler_pending_guests")
		return v == 1
	})
	if d := after.must(t, "corral_scheduler_placements_total") - before.must(t, "corral_scheduler_placements_total"); d != 1 {
		t.Errorf("placements rose by %v over creating g2 and a guest that fits nowhere, want 1", d)
	}
	routeCount := func(s scrape, route, code string) float64 {
		v, _ := s.value("corral_http_request_duration_seconds_count", `route="`+route+`"`, `code="`+code+`"`)
		return v
	}
	for _, c := range []struct {
		route, code string
		want        float64
	}{
		{"POST /v1/guests", "200", 2},
		{"POST /v1/guests/{name}/tune", "200", 1},
		{"GET /v1/guests/{name}", "401", 1},
	} {
		if d := routeCount(after, c.route, c.code) - routeCount(before, c.route, c.code); d != c.want {
			t.Errorf("corral_http_request_duration_seconds_count{route=%q,code=%q} rose by %v, want %v", c.route, c.code, d, c.want)
		}
	}
	for series := range after {
		if strings.Contains(series, "/v1/guests/g2") {
			t.Errorf("a raw path became a label: %s", series)
		}
	}
	if d := after.must(t, "corral_raft_commit_duration_seconds_count") - before.must(t, "corral_raft_commit_duration_seconds_count"); d < 3 {
		t.Errorf("raft commits observed rose by %v over two creates and a tune, want at least 3", d)
	}
	if after.must(t, "corral_raft_applied_index") <= before.must(t, "corral_raft_applied_index") {
		t.Errorf("corral_raft_applied_index did not move: %v then %v", before.must(t, "corral_raft_applied_index"), after.must(t, "corral_raft_applied_index"))
	}
	if v := after.must(t, "corral_raft_leader"); v != 1 {
		t.Errorf("corral_raft_leader on the leader = %v, want 1", v)
	}
	if v := after.must(t, "corral_raft_leader_changes_total"); v < 1 {
		t.Errorf("corral_raft_leader_changes_total = %v, want at least the election that made it leader", v)
	}
	tuned := func(s scrape) float64 { v, _ := s.value("corral_events_applied_total", `type="guest.tuned"`); return v }
	if d := tuned(after) - tuned(before); d != 1 {
		t.Errorf("corral_events_applied_total{type=\"guest.tuned\"} rose by %v over one tune, want 1", d)
	}
	_, last := leader.store.Bounds()
	if v := after.must(t, "corral_event_store_last_index"); v < float64(last)-10 || v > float64(last) {
		t.Errorf("corral_event_store_last_index = %v, the store is at %d", v, last)
	}
	if d := after.must(t, "corral_event_store_appended_total") - before.must(t, "corral_event_store_appended_total"); d < 4 {
		t.Errorf("corral_event_store_appended_total rose by %v, want at least 4 (two definitions, a placement, a tuning)", d)
	}
	if v := after.must(t, "corral_event_store_size_bytes"); v <= 0 {
		t.Errorf("corral_event_store_size_bytes = %v", v)
	}
	if after.must(t, "corral_scheduler_pass_duration_seconds_count") < 1 {
		t.Error("no scheduling pass was timed, though a guest waits")
	}
	after.must(t, "corral_event_store_trimmed_total")
	after.must(t, "corral_event_store_broken")
	after.must(t, "corral_http_requests_denied_total", `route="GET /v1/guests/{name}"`)
}

// TestMetricsRequireToken: with MetricsRequireToken a certificate alone
// no longer reads /metrics; a token with cluster:read does, and the route
// table says so.
func TestMetricsRequireToken(t *testing.T) {
	sc := newSecureClusterWith(t, 1, func(c *Config) { c.MetricsRequireToken = true })
	sc.setup()
	_, leader := sc.leader()
	probe := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "probe"})
	if _, a := sc.scrape(leader, probe, ""); !a.refused() {
		t.Errorf("GET /metrics with a certificate and no token answered %d, want a refusal", a.status)
	}
	if s, a := sc.scrape(leader, probe, sc.token["read"]); s == nil {
		t.Errorf("GET /metrics with a read token: %d %s", a.status, a.body)
	}
	for _, r := range leader.Routes() {
		if r.Path == "/metrics" && r.Access != "a token with cluster:read" {
			t.Errorf("the route table says /metrics needs %q", r.Access)
		}
	}
}
