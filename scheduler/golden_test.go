package scheduler_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/scheduler"
	st "github.com/corral-dev/corral/scheduler/schedulertest"
)

// tb is what checkFinal needs; *testing.T and *rapid.T both have it.
type tb interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

var update = flag.Bool("update", false, "rewrite the expected output of scheduler/testdata/*.txt")

// TestGolden runs every scenario in testdata/. A scenario file is the input
// (config, node, alloc and guest lines), a line "----", and the expected
// output; `go test ./scheduler -update` rewrites the output, to be reviewed
// as a diff. Besides comparing text, every scenario checks that the plan is
// deterministic, that the FSM re-check (CheckPlacement) accepts each
// placement in order, that no node ends over-committed, and that every
// pending guest fits on no node according to the naive model.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios in testdata: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, want, _ := strings.Cut(string(raw), "----\n")
			sc := parseScenario(t, input)
			got := runScenario(t, sc)
			if *update {
				if err := os.WriteFile(file, []byte(input+"----\n"+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("%s: output differs (run `go test ./scheduler -update` and review the diff)\n--- want\n%s--- got\n%s", file, want, got)
			}
		})
	}
}

type scenario struct {
	cfg     scheduler.Config
	seed    uint64
	nodes   []scheduler.Node
	pending []scheduler.Guest
}

func runScenario(t *testing.T, sc scenario) string {
	t.Helper()
	snap := st.Snapshot(t, sc.nodes...)
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	plan, err := scheduler.Schedule(snap, sc.pending, sc.cfg, now, sc.seed)
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	again, _ := scheduler.Schedule(snap, sc.pending, sc.cfg, now, sc.seed)
	if !reflect.DeepEqual(plan, again) {
		t.Errorf("same seed gave different plans")
	}
	final := st.Commit(t, snap, sc.cfg, plan.Placements)
	checkFinal(t, snap, final, plan, sc.pending, sc.cfg)

	var b strings.Builder
	b.WriteString("placements:\n")
	for _, p := range plan.Placements {
		fmt.Fprintf(&b, "  %s -> %s", p.Guest.Name, p.Node)
		if len(p.CPUs) > 0 {
			fmt.Fprintf(&b, " cpus=%s", p.CPUs)
		}
		fmt.Fprintf(&b, " score=%.3f ranked=%d\n", p.Score, p.Ranked)
	}
	b.WriteString("pending:\n")
	for _, f := range plan.Failures {
		for line := range strings.SplitSeq(f.String(), "\n") {
			b.WriteString("  " + line + "\n")
		}
	}
	b.WriteString("nodes after commit:\n")
	for _, n := range final.Nodes() {
		u := useOf(&n, sc.cfg)
		fmt.Fprintf(&b, "  %s memory %d/%d MiB, vcpus %d/%d", n.ID, u.memUsed>>20, u.memCap>>20, u.shared, u.sharedCap)
		if len(u.pinned) > 0 {
			fmt.Fprintf(&b, ", pinned %s", u.pinned)
		}
		var names []string
		for _, a := range n.Allocations {
			names = append(names, a.Guest)
		}
		if len(names) > 0 {
			fmt.Fprintf(&b, ", guests %s", strings.Join(names, " "))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "summary: %s\n", plan.Summary)
	return b.String()
}

// checkFinal holds for every plan: no node that had room became
// over-committed, and no pending guest (other than invalid ones) fits
// anywhere in the final state.
func checkFinal(t tb, before, after *scheduler.Snapshot, plan scheduler.Plan, pending []scheduler.Guest, cfg scheduler.Config) {
	t.Helper()
	for i, n := range after.Nodes() {
		if overCommitted(&before.Nodes()[i], cfg) != "" {
			continue
		}
		if msg := overCommitted(&n, cfg); msg != "" {
			t.Errorf("over-committed after plan: %s", msg)
		}
	}
	byName := map[string]*scheduler.Guest{}
	for i := range pending {
		byName[pending[i].Name] = &pending[i]
	}
	for _, f := range plan.Failures {
		if f.Err != nil {
			continue
		}
		g := byName[f.Guest]
		for _, n := range after.Nodes() {
			if modelFits(&n, g, cfg) {
				t.Errorf("guest %s left pending but fits on node %s; reasons: %s", f.Guest, n.ID, f)
			}
		}
	}
}

func parseScenario(t *testing.T, input string) scenario {
	t.Helper()
	// Scenarios run without CPU overcommit unless their config line sets
	// it, so their vCPU arithmetic reads as the nodes' CPUs.
	sc := scenario{cfg: scheduler.DefaultConfig(), seed: 1}
	sc.cfg.CPUOvercommit = 1
	sc.cfg.MaxReasons = 0
	for i, line := range strings.Split(input, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("line %d %q: %s", i+1, line, fmt.Sprintf(format, args...))
		}
		args := fields[1:]
		if fields[0] != "config" {
			if len(fields) < 2 || strings.Contains(fields[1], "=") {
				fail("%s needs a name", fields[0])
			}
			args = fields[2:]
		}
		kv := map[string][]string{}
		for _, f := range args {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				fail("field %q is not key=value", f)
			}
			kv[k] = append(kv[k], v)
		}
		one := func(k string) (string, bool) {
			vs := kv[k]
			if len(vs) == 0 {
				return "", false
			}
			return vs[len(vs)-1], true
		}
		switch fields[0] {
		case "config":
			if v, ok := one("algorithm"); ok {
				sc.cfg.Algorithm = scheduler.Algorithm(v)
			}
			if v, ok := one("cpu-overcommit"); ok {
				sc.cfg.CPUOvercommit = mustFloat(t, v)
			}
			if v, ok := one("memory-overcommit"); ok {
				sc.cfg.MemoryOvercommit = mustFloat(t, v)
			}
			if v, ok := one("limit"); ok {
				sc.cfg.CandidateLimit = int(mustInt(t, v))
			}
			if v, ok := one("reasons"); ok {
				sc.cfg.MaxReasons = int(mustInt(t, v))
			}
			if v, ok := one("seed"); ok {
				sc.seed = uint64(mustInt(t, v))
			}
		case "node":
			b := st.Node(fields[1])
			if v, ok := one("cpus"); ok {
				b.CPUSet(v)
			}
			if v, ok := one("memory"); ok {
				b.Memory(mustBytes(t, v))
			}
			if v, ok := one("reserve-cpus"); ok {
				b.Reserve(int(mustInt(t, v)), 0)
			}
			n := b.Build()
			if v, ok := one("reserve-memory"); ok {
				n.ReservedMemoryBytes = mustBytes(t, v)
			}
			if v, ok := one("drivers"); ok {
				n.Drivers = strings.Split(v, ",")
			}
			n.Labels = labels(t, kv["labels"])
			switch v, _ := one("status"); v {
			case "", "up":
			case "down":
				n.Status = scheduler.NodeDown
			case "unknown":
				n.Status = scheduler.NodeStatusUnknown
			default:
				fail("status %q", v)
			}
			switch v, _ := one("eligibility"); v {
			case "", "eligible":
			case "draining":
				n.Eligibility = scheduler.Draining
			case "ineligible":
				n.Eligibility = scheduler.Ineligible
			default:
				fail("eligibility %q", v)
			}
			sc.nodes = append(sc.nodes, n)
		case "alloc", "guest":
			g := parseGuest(t, fields[1], fields[2:])
			if fields[0] == "guest" {
				sc.pending = append(sc.pending, g)
				continue
			}
			node, _ := one("node")
			idx := -1
			for j := range sc.nodes {
				if sc.nodes[j].ID == node {
					idx = j
				}
			}
			if idx < 0 {
				fail("alloc on unknown node %q", node)
			}
			a := scheduler.Allocation{Guest: g.Name, MemoryBytes: g.MemoryBytes, VCPUs: g.VCPUs, CPUs: g.CPUSet, Labels: g.Labels, SpreadBy: g.SpreadBy}
			sc.nodes[idx].Allocations = append(sc.nodes[idx].Allocations, a)
		default:
			fail("unknown directive %q", fields[0])
		}
	}
	return sc
}

// parseGuest reads "driver= memory= vcpus= constraint=… labels= spread-by=
// cpuset= pin= prefer=" fields; constraints are kept raw so that bad ones reach
// Schedule's validation.
func parseGuest(t *testing.T, name string, fields []string) scheduler.Guest {
	t.Helper()
	g := st.Guest(name).Build()
	var ls []string
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "driver":
			g.Driver = v
		case "memory":
			g.MemoryBytes = mustBytes(t, v)
		case "vcpus":
			g.VCPUs = int(mustInt(t, v))
		case "constraint":
			c, err := scheduler.ParseConstraint(v)
			if err != nil {
				c = scheduler.Constraint{Key: v, Op: scheduler.OpEqual, Value: ""}
			}
			g.Constraints = append(g.Constraints, c)
		case "labels":
			ls = append(ls, v)
		case "spread-by":
			g.SpreadBy = v
		case "cpuset", "cpus":
			set, err := scheduler.ParseCPUSet(v)
			if err != nil {
				t.Fatalf("guest %s: %v", name, err)
			}
			g.CPUSet = set
		case "pin":
			g.PinCPUs = int(mustInt(t, v))
		case "prefer":
			g.Prefer = v
		case "node":
		default:
			t.Fatalf("guest %s: unknown field %q", name, k)
		}
	}
	g.Labels = labels(t, ls)
	return g
}

func labels(t *testing.T, vs []string) map[string]string {
	if len(vs) == 0 {
		return nil
	}
	m := map[string]string{}
	for _, v := range vs {
		for kv := range strings.SplitSeq(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("label %q is not key=value", kv)
			}
			m[k] = val
		}
	}
	return m
}

func mustInt(t *testing.T, s string) int64 {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustFloat(t *testing.T, s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustBytes(t *testing.T, s string) uint64 {
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			return uint64(mustInt(t, n)) * u.mult
		}
	}
	return uint64(mustInt(t, s))
}
