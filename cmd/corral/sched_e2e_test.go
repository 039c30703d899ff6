package main

import (
	"strings"
	"testing"
	"time"
)

// TestSchedulingCommands drives the placement commands against corral dev:
// dry run, pending reasons, eligibility, drain, scheduler config, node show.
func TestSchedulingCommands(t *testing.T) {
	p := startDev(t, t.TempDir())
	node := strings.Fields(strings.Split(p.ok("node", "list"), "\n")[1])[0]

	out := p.ok("guest", "create", "web", "--driver", "process", "--memory", "64MiB", "--dry-run", "--", "/bin/sleep", "100")
	if !strings.Contains(out, "would be placed on node "+node) {
		t.Fatalf("dry run said %q", out)
	}
	if r := p.corral("guest", "show", "web"); r.code == 0 {
		t.Fatal("dry run created the guest")
	}
	out = p.ok("guest", "create", "huge", "--driver", "process", "--memory", "2TiB", "--dry-run", "--", "/bin/true")
	if !strings.Contains(out, "would stay pending") || !strings.Contains(out, "node "+node+": needs") {
		t.Fatalf("dry run of an oversized guest said %q", out)
	}

	// A guest no node can hold stays pending and says why.
	p.ok("guest", "create", "huge", "--driver", "process", "--memory", "2TiB", "--", "/bin/true")
	out = p.ok("guest", "show", "huge")
	if !strings.Contains(out, "Placement:") || !strings.Contains(out, "node "+node+": needs") {
		t.Fatalf("guest show of a pending guest:\n%s", out)
	}

	// An ineligible node takes no new guest; eligible again, it does.
	p.ok("node", "eligibility", node, "--disable")
	p.ok("guest", "create", "web", "--driver", "process", "--memory", "64MiB", "--", "/bin/sleep", "100")
	if out := p.ok("guest", "show", "web"); !strings.Contains(out, "ineligible") {
		t.Fatalf("guest on an ineligible cluster:\n%s", out)
	}
	p.ok("node", "eligibility", node, "--enable")
	waitShow(t, p, "web", "Status:", "placed")
	if out := p.ok("node", "show", node); !containsRow(out, "web", "process", "placed", "64MiB") {
		t.Fatalf("node show:\n%s", out)
	}

	// Draining the only node ends with it ineligible once empty... but the
	// guest has nowhere to go, so the drain holds.
	p.ok("node", "drain", node, "--max-parallel", "1")
	if out := p.ok("node", "list"); !strings.Contains(out, "draining") {
		t.Fatalf("node list during drain:\n%s", out)
	}
	p.ok("node", "drain", node, "--cancel")
	if out := p.ok("node", "list"); !strings.Contains(out, "eligible") || strings.Contains(out, "draining") {
		t.Fatalf("node list after cancel:\n%s", out)
	}

	p.ok("operator", "scheduler", "set-config", "--algorithm", "spread", "--cpu-overcommit", "2")
	out = p.ok("operator", "scheduler", "get-config")
	if !strings.Contains(out, "spread") || !strings.Contains(out, "cpu_overcommit") {
		t.Fatalf("get-config: %q", out)
	}

	// Bad input: clear errors, non-zero exit.
	for _, args := range [][]string{
		{"operator", "scheduler", "set-config", "--algorithm", "random"},
		{"operator", "scheduler", "set-config", "--cpu-overcommit", "0.5"},
		{"node", "drain", "nope"},
		{"node", "eligibility", node},
		{"guest", "create", "c", "--driver", "process", "--memory", "64MiB", "--constraint", "rack", "--", "/bin/true"},
		{"guest", "create", "c", "--driver", "process", "--memory", "64MiB", "--vcpus", "1", "--cpuset", "0-3", "--", "/bin/true"},
	} {
		r := p.corral(args...)
		if r.code == 0 || !strings.HasPrefix(r.stderr, "corral: ") {
			t.Errorf("corral %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

func waitShow(t *testing.T, p *devProcess, name string, cells ...string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		out := p.ok("guest", "show", name)
		if containsRow(out, cells...) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest show %s never showed %v:\n%s", name, cells, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
