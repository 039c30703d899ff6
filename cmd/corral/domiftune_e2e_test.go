package main

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/corral-dev/corral/coordinator"
	"github.com/corral-dev/corral/coordinator/api"
)

// shapeTable is the nftables table corral dev's agent (node test-node)
// shapes with.
const shapeTable = "corral-test-node"

// newVeth makes a veth pair in the host's namespace, up, with a unique
// name (this kernel has no dummy interfaces), and deletes it when the test
// ends, which also takes its qdiscs. It returns the end to shape.
func newVeth(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make an interface")
	}
	for _, p := range []string{"ip", "nft", "tc"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("this host has no %s", p)
		}
	}
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	name := "cdt" + hex.EncodeToString(r[:]) // 11 characters, below IFNAMSIZ
	if out, err := exec.Command("ip", "link", "add", name+"a", "type", "veth", "peer", "name", name+"b").CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", name+"a").CombinedOutput(); err != nil {
			t.Errorf("removing veth %sa: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "link", "set", name+"a", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set up: %v: %s", err, out)
	}
	return name + "a"
}

// hostRun runs a host command the test only reads with and returns its
// output ("" and the error text folded in when it fails, for the
// messages).
func hostRun(t *testing.T, name string, args ...string) (string, bool) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err == nil
}

// TestDevDomiftune drives domiftune against corral dev's agent shaping a
// veth the test made: the agent makes its nft table and an HTB class at
// the rate asked, guest show and history say what was desired and
// applied, and destroying the guest removes the class, the table and the
// qdisc.
func TestDevDomiftune(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	iface := newVeth(t)
	if out, _ := hostRun(t, "nft", "list", "tables"); strings.Contains(out, "inet "+shapeTable+"\n") {
		t.Skipf("this host already has table inet %s: another agent of node test-node shapes here", shapeTable)
	}
	// Runs after corral dev stopped: whatever the agent left is this test's.
	t.Cleanup(func() { _, _ = hostRun(t, "nft", "delete", "table", "inet", shapeTable) })
	p, _ := startAgentDev(t, []string{"shaped"}, "--shape-interface", iface)
	p.ok("guest", "create", "shaped", "--driver", "process", "--memory", "32MiB", "--", "/bin/sleep", "1000")
	waitGuest(t, p, "shaped", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })

	out := p.ok("domiftune", "shaped", "--outbound", "1024,2048,64", "--inbound", "512")
	for _, row := range [][]string{
		{"inbound.average:", "512"}, {"inbound.peak", ":", "0"}, {"inbound.burst", ":", "0"},
		{"outbound.average:", "1024"}, {"outbound.peak", ":", "2048"}, {"outbound.burst", ":", "64"},
	} {
		if !containsRow(out, row...) {
			t.Errorf("domiftune printed\n%s\nwant a row %q", out, row)
		}
	}
	want := map[string]string{"inbound_average": "512", "outbound_average": "1024", "outbound_peak": "2048", "outbound_burst": "64"}
	waitGuest(t, p, "shaped", "reported the bandwidth applied", func(g *api.GuestView) bool {
		for k, v := range want {
			if g.Applied[k] != v {
				return false
			}
		}
		return true
	})

	// The host: the agent's table recognises the guest by its cgroup, and
	// its class on the interface has the rate (1024 KiB/s = 8388608
	// bit/s, tc prints 8388Kbit), the peak as ceil and the burst.
	table, ok := hostRun(t, "nft", "list", "table", "inet", shapeTable)
	if !ok || !strings.Contains(table, "meta priority set 1:") || !strings.Contains(table, "rate over 512 kbytes/second burst 512 kbytes") || !strings.Contains(table, `limit name "in_`) ||
		!strings.Contains(table, `comment "guest shaped"`) {
		t.Errorf("nft list table inet %s:\n%s\nwant the guest's priority and policing rules", shapeTable, table)
	}
	classes, _ := hostRun(t, "tc", "class", "show", "dev", iface)
	guestClass := regexp.MustCompile(`class htb (1:[0-9a-f]+) root .*rate 8388Kbit ceil 16777Kbit burst 64Kb`)
	m := guestClass.FindStringSubmatch(classes)
	if m == nil || m[1] == "1:ffff" {
		t.Errorf("tc class show dev %s:\n%s\nwant the guest's class at rate 8388Kbit ceil 16777Kbit burst 64Kb", iface, classes)
	} else if !strings.Contains(table, "meta priority set "+m[1]) {
		t.Errorf("the table sets priority to another class than the guest's %s:\n%s", m[1], table)
	}

	show := p.ok("guest", "show", "shaped")
	for k, v := range want {
		if !containsRow(show, k, v, "/", v) {
			t.Errorf("guest show lacks %s %s / %s:\n%s", k, v, v, show)
		}
	}
	if !containsRow(show, "inbound_peak", "0", "/", "0") {
		t.Errorf("guest show lacks inbound_peak 0 / 0:\n%s", show)
	}
	hist := p.ok("guest", "history", "shaped")
	if !strings.Contains(hist, "outbound_average 0 → 1024") || !strings.Contains(hist, "inbound_average 0 → 512") ||
		!containsRow(hist, "guest.tuning_applied", "outbound_average", "1024", "applied", "on", "test-node") ||
		!containsRow(hist, "guest.tuning_applied", "inbound_average", "512", "applied", "on", "test-node") {
		t.Errorf("guest history lacks the change and its application:\n%s", hist)
	}

	// Destroying the last shaped guest takes its class, the table and the
	// qdisc away.
	p.ok("guest", "destroy", "shaped")
	coordinator.WaitFor(t, waitTimeout, "the shaping to go with the guest", func() bool {
		tables, _ := hostRun(t, "nft", "list", "tables")
		qdisc, _ := hostRun(t, "tc", "qdisc", "show", "dev", iface, "root")
		classes, _ := hostRun(t, "tc", "class", "show", "dev", iface)
		return !strings.Contains(tables, shapeTable) && !strings.Contains(qdisc, "htb") && !strings.Contains(classes, "htb")
	})
}

// TestDevDomiftuneRefused: a node whose agent shapes no interface refuses
// domiftune with what to do, before any event.
func TestDevDomiftuneRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	p := startDev(t, t.TempDir())
	p.ok("guest", "create", "web", "--driver", "process", "--memory", "32MiB", "--", "/bin/sleep", "1000")
	waitGuest(t, p, "web", "placed", func(g *api.GuestView) bool { return g.Node != "" })
	before := lastIndex(t, p)
	r := p.corral("domiftune", "web", "--outbound", "1024")
	if r.code != 1 || !strings.Contains(r.stderr, "node test-node shapes no network interface") || !strings.Contains(r.stderr, "--shape-interface IFACE") {
		t.Errorf("domiftune on a node that shapes nothing: exit %d, stderr %q; want exit 1 and what to do", r.code, r.stderr)
	}
	if after := lastIndex(t, p); after != before {
		t.Errorf("the refused domiftune appended %d events", after-before)
	}
	if hist := p.ok("guest", "history", "web"); strings.Contains(hist, "guest.tuned") {
		t.Errorf("guest history has a guest.tuned after the refusal:\n%s", hist)
	}
	// Clearing is no limit and needs no shaping.
	p.ok("domiftune", "web", "--outbound", "0")
}
