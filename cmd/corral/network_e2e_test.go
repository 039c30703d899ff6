package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// TestGuestNetworkBridge: corral dev --bridge makes the bridge when the
// first container with --network bridge starts; containers get the
// first free addresses of the range, reach each other, and guest show
// (text and -o json) has the address, MAC and host interface; destroying
// a guest removes its veth and frees its address for the next guest; a
// restarted agent keeps the addresses it gave.
func TestGuestNetworkBridge(t *testing.T) {
	rep := cgrouptest.RequireHost(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: no ip")
	}
	part := cgrouptest.NewPartition(t, rep)
	ccfg := cgroupdriver.DefaultConfig()
	ccfg.Partition, ccfg.Report = part, &rep
	cg, err := cgroupdriver.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := drivertest.Rootfs(t)
	var r [3]byte
	_, _ = rand.Read(r[:])
	bridge := "cbe" + hex.EncodeToString(r[:])
	prefix := fmt.Sprintf("10.%d.%d.", 200+r[0]%50, r[1])
	t.Cleanup(func() {
		if _, err := os.Stat("/sys/class/net/" + bridge); err == nil {
			if out, err := exec.Command("ip", "link", "del", bridge).CombinedOutput(); err != nil {
				t.Errorf("removing the bridge %s: %v: %s", bridge, err, out)
			}
		}
	})
	dir := t.TempDir()
	flags := []string{"--cgroup-partition", part, "--bridge", bridge, "--bridge-cidr", prefix + "0/24"}
	p := startDevWith(t, dir, flags...)
	p1 := p
	t.Cleanup(func() {
		if p == p1 {
			p1.stop(syscall.SIGTERM, waitTimeout)
		}
	})

	create := func(name string, cmd string) *api.GuestView {
		t.Helper()
		destroyOnCleanup(t, p, cg, cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: name})
		p.ok("guest", "create", name, "--driver", "lxc", "--memory", "64MiB", "--rootfs", rootfs, "--network", "bridge", "--", "/bin/sh", "-c", cmd)
		return waitGuest(t, p, name, "ran with an address", func(g *api.GuestView) bool {
			return g.Status == api.StatusRunning && len(g.Addresses) == 1
		})
	}
	a := create("neta", "exec sleep 1000")
	if a.Addresses[0] != prefix+"2/24" || !strings.HasPrefix(a.MAC, "52:54:00:") || a.Interface == "" {
		t.Errorf("guest a: addresses %v, mac %q, interface %q; want %s2/24, a 52:54:00 MAC and its veth", a.Addresses, a.MAC, a.Interface, prefix)
	}
	if b, err := os.ReadFile("/sys/class/net/" + bridge + "/bridge/bridge_id"); err != nil || len(b) == 0 {
		t.Fatalf("the agent did not make the bridge %s: %v", bridge, err)
	}
	var js api.GuestView
	if err := json.Unmarshal([]byte(p.ok("guest", "show", "neta", "-o", "json")), &js); err != nil || len(js.Addresses) != 1 || js.Addresses[0] != a.Addresses[0] {
		t.Errorf("guest show -o json: addresses %v, %v; want %v", js.Addresses, err, a.Addresses)
	}
	if show := p.ok("guest", "show", "neta"); !strings.Contains(show, "bridge "+a.Addresses[0]+" mac "+a.MAC+" host interface "+a.Interface) {
		t.Errorf("guest show lacks the network:\n%s", show)
	}
	b := create("netb", fmt.Sprintf("ping -c 1 -W 5 %s2 && echo PEER-OK; exec sleep 1000", prefix))
	if b.Addresses[0] != prefix+"3/24" {
		t.Errorf("guest b got %v, want the next free address %s3/24", b.Addresses, prefix)
	}
	logB := filepath.Join(dir, "agent", "guests", "netb", "guest.log")
	waitFor(t, "b to ping a", func() bool {
		out, _ := os.ReadFile(logB)
		return strings.Contains(string(out), "PEER-OK")
	}, func() string { out, _ := os.ReadFile(logB); return string(out) })

	// Destroy frees the address and removes the veth.
	p.ok("guest", "destroy", "neta")
	waitFor(t, "a's veth to go", func() bool {
		_, err := os.Stat("/sys/class/net/" + a.Interface)
		return err != nil
	}, func() string { return a.Interface })
	c := create("netc", "exec sleep 1000")
	if c.Addresses[0] != prefix+"2/24" {
		t.Errorf("guest c got %v, want a's freed %s2/24", c.Addresses, prefix)
	}

	// A restarted agent adopts b and c and keeps their addresses: the
	// next guest gets the next free one, and b's ping target is still a
	// guest on the bridge.
	if err := p.stop(syscall.SIGTERM, waitTimeout); err != nil {
		t.Fatal(err)
	}
	p = startDevWith(t, dir, flags...)
	p2 := p
	t.Cleanup(func() { p2.stop(syscall.SIGTERM, waitTimeout) })
	for _, name := range []string{"netb", "netc"} { // through the new dev, before it stops
		destroyOnCleanup(t, p, cg, cgroupdriver.Guest{Kind: cgroupdriver.KindLXC, ID: name})
	}
	d := create("netd", fmt.Sprintf("ping -c 1 -W 5 %s3 && echo PEER-OK; exec sleep 1000", prefix))
	if d.Addresses[0] != prefix+"4/24" {
		t.Errorf("after a restart guest d got %v, want %s4/24 (b and c keep .3 and .2)", d.Addresses, prefix)
	}
	logD := filepath.Join(dir, "agent", "guests", "netd", "guest.log")
	waitFor(t, "d to ping b across the restart", func() bool {
		out, _ := os.ReadFile(logD)
		return strings.Contains(string(out), "PEER-OK")
	}, func() string { out, _ := os.ReadFile(logD); return string(out) })
	var held struct{ Addresses map[string]string }
	raw, _ := os.ReadFile(filepath.Join(dir, "agent", "network.json"))
	if err := json.Unmarshal(raw, &held); err != nil || held.Addresses["netb"] != prefix+"3" || held.Addresses["netc"] != prefix+"2" || held.Addresses["neta"] != "" {
		t.Errorf("network.json after the restart: %s (%v)", raw, err)
	}

	// A process guest cannot ask for the bridge.
	if r := p.corral("guest", "create", "bad", "--driver", "process", "--memory", "64MiB", "--network", "bridge", "--", "sleep", "1"); r.code == 0 || !strings.Contains(r.stderr, "network") {
		t.Errorf("process guest with --network bridge: exit %d, %q", r.code, r.stderr)
	}
}
