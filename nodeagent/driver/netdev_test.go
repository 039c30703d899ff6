package driver_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/nodeagent/driver"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// testBridge makes a bridge of its own with a random /24 in 10.200-249.x,
// the first address on the bridge, and removes it when the test ends. It
// skips without ip.
func testBridge(t *testing.T) (name string, gw netip.Prefix) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping network test: needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping network test: no ip")
	}
	var r [3]byte
	_, _ = rand.Read(r[:])
	name = "cbt" + hex.EncodeToString(r[:])
	gw = netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.1/24", 200+r[0]%50, r[1]))
	for _, args := range [][]string{
		{"link", "add", name, "type", "bridge"},
		{"addr", "add", gw.String(), "dev", name},
		{"link", "set", name, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			_ = exec.Command("ip", "link", "del", name).Run()
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", name).CombinedOutput(); err != nil {
			t.Errorf("removing the test bridge %s: %v: %s", name, err, out)
		}
	})
	return name, gw
}

// netOf is the network of guest id on bridge with address n of gw's range.
func netOf(bridge string, gw netip.Prefix, id string, n int) *driver.Network {
	a := gw.Addr()
	for range n - 1 {
		a = a.Next()
	}
	return &driver.Network{Bridge: bridge, HostIf: driver.HostInterface(bridge, id), MAC: driver.MACFor(id),
		Address: netip.PrefixFrom(a, gw.Bits()), Gateway: gw.Addr()}
}

// bridgePort reports the bridge iface is a port of, "" when it has none
// or does not exist.
func bridgePort(iface string) string {
	p, err := filepath.EvalSymlinks("/sys/class/net/" + iface + "/master")
	if err != nil {
		return ""
	}
	return filepath.Base(p)
}

func exists(iface string) bool {
	_, err := os.Stat("/sys/class/net/" + iface)
	return err == nil
}

// TestLXCNetwork: two containers on one bridge, each with eth0 at its
// address, its MAC and a default route via the bridge; one pings the
// other and the gateway. Destroying a container removes its veth.
func TestLXCNetwork(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	br, gw := testBridge(t)
	cfg := drivertest.Config(t)
	d := driver.NewLXC(cfg)

	a := spec(t, cgroupdriver.KindLXC, "neta")
	a.Rootfs, a.MemoryBytes = rootfs, 64<<20
	a.Network = netOf(br, gw, a.Guest.ID, 2)
	a.Command = []string{"/bin/sh", "-c", `ip -o addr show dev eth0; ip route; cat /sys/class/net/eth0/address; echo READY; exec sleep 600`}
	ia := start(t, d, a)
	waitLog(t, ia, "READY", 10*time.Second)

	b := spec(t, cgroupdriver.KindLXC, "netb")
	b.Rootfs, b.MemoryBytes = rootfs, 64<<20
	b.Network = netOf(br, gw, b.Guest.ID, 3)
	peer, gwAddr := a.Network.Address.Addr().String(), gw.Addr().String()
	b.Command = []string{"/bin/sh", "-c", fmt.Sprintf(`ping -c 1 -W 5 %s && echo PEER-OK; ping -c 1 -W 5 %s && echo GW-OK; echo DONE`, peer, gwAddr)}
	ib := start(t, d, b)

	if got := ia.HostInterface(); got != a.Network.HostIf || len(got) > 15 {
		t.Errorf("host interface %q, want %q (at most 15 characters)", got, a.Network.HostIf)
	}
	for _, n := range []*driver.Network{a.Network, b.Network} {
		if p := bridgePort(n.HostIf); p != br {
			t.Errorf("%s is a port of %q, want the bridge %s", n.HostIf, p, br)
		}
	}
	waitLog(t, ib, "DONE", 20*time.Second)
	logA, logB := readFile(t, ia.LogPath()), readFile(t, ib.LogPath())
	for _, want := range []string{"eth0    inet " + a.Network.Address.String(), "default via " + gwAddr + " dev eth0", a.Network.MAC} {
		if !strings.Contains(logA, want) {
			t.Errorf("container a lacks %q:\n%s", want, logA)
		}
	}
	for _, want := range []string{"PEER-OK", "GW-OK"} {
		if !strings.Contains(logB, want) {
			t.Errorf("container b: no %s:\n%s", want, logB)
		}
	}
	destroy(t, ia)
	if exists(a.Network.HostIf) {
		t.Errorf("the veth %s outlived its container", a.Network.HostIf)
	}
}

// TestLXCNetworkMissingBridge: a container whose bridge is gone fails to
// start, saying so, and leaves no interface or group behind.
func TestLXCNetworkMissingBridge(t *testing.T) {
	rootfs := drivertest.Rootfs(t)
	cfg := drivertest.Config(t)
	s := spec(t, cgroupdriver.KindLXC, "nobr")
	s.Rootfs, s.Command = rootfs, []string{"/bin/true"}
	s.Network = netOf("cbtmissing", netip.MustParsePrefix("10.254.254.1/24"), s.Guest.ID, 2)
	_, err := driver.NewLXC(cfg).Start(testCtx(t), s)
	if err == nil || !strings.Contains(err.Error(), "bridge cbtmissing") {
		t.Fatalf("Start: %v, want the missing bridge named", err)
	}
	if exists(s.Network.HostIf) {
		t.Errorf("%s left behind", s.Network.HostIf)
	}
	checkGone(t, cfg, s, 0)
}

// TestQEMUNetwork: a VM gets a tap on the bridge, the NIC is on QEMU's
// command line with the guest's MAC, QMP shows the NIC, and the tap goes
// with the VM.
func TestQEMUNetwork(t *testing.T) {
	t.Parallel()
	a := drivertest.VM(t)
	br, gw := testBridge(t)
	cfg := drivertest.Config(t)
	d := newQEMU(t, cfg)
	s := vmSpec(t, a, "vmnet")
	s.Network = netOf(br, gw, s.Guest.ID, 2)
	inst := start(t, d, s)
	tap := s.Network.HostIf
	if p := bridgePort(tap); p != br {
		t.Errorf("tap %s is a port of %q, want %s", tap, p, br)
	}
	if k, _ := os.ReadFile("/sys/class/net/" + tap + "/tun_flags"); len(k) == 0 {
		t.Errorf("%s is not a tap device", tap)
	}
	cmdline := strings.ReplaceAll(readFile(t, fmt.Sprintf("/proc/%d/cmdline", inst.PID())), "\x00", " ")
	for _, want := range []string{"-netdev tap,id=net0,fd=5", "-device virtio-net-pci,netdev=net0,mac=" + s.Network.MAC} {
		if !strings.Contains(cmdline, want) {
			t.Errorf("QEMU's command line lacks %q: %s", want, cmdline)
		}
	}
	var out string
	if err := inst.QMP().Execute(testCtx(t), "human-monitor-command", map[string]any{"command-line": "info network"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "macaddr="+s.Network.MAC) || !strings.Contains(out, "type=tap,fd=5") {
		t.Errorf("info network: %s", out)
	}
	waitLog(t, inst, drivertest.Marker, bootTimeout)
	destroy(t, inst)
	if exists(tap) {
		t.Errorf("tap %s outlived the VM", tap)
	}
}
