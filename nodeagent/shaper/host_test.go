package shaper

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// The rate tests run the shaper for one end of a veth pair in network
// namespace A and move data to namespace B (outbound) or from it
// (inbound), with a process of the test binary at each end (the helper
// below), one of them inside the guest's cgroup.

// TestMain runs the helper when the test binary is re-executed as one.
func TestMain(m *testing.M) {
	if role := os.Getenv("CORRAL_SHAPER_HELPER"); role != "" {
		if err := helper(role); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper is one end of a transfer. It first joins the cgroup whose
// cgroup.procs CORRAL_SHAPER_CGROUP names, so every socket it opens is
// the guest's. "recv" listens on CORRAL_SHAPER_ADDR, prints "listening",
// takes one connection and prints the bytes read and the seconds from the
// first byte to EOF, then the same from the byte that completed the first
// half of CORRAL_SHAPER_BYTES (the sustained rate, after any burst); "send" connects there and writes CORRAL_SHAPER_BYTES.
func helper(role string) error {
	if procs := os.Getenv("CORRAL_SHAPER_CGROUP"); procs != "" {
		if err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return err
		}
	}
	addr := os.Getenv("CORRAL_SHAPER_ADDR")
	switch role {
	case "recv":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		fmt.Println("listening")
		c, err := l.Accept()
		if err != nil {
			return err
		}
		buf := make([]byte, 64<<10)
		size, _ := strconv.ParseInt(os.Getenv("CORRAL_SHAPER_BYTES"), 10, 64)
		var n, atHalf int64
		var first, half time.Time
		for {
			k, err := c.Read(buf)
			if k > 0 && n == 0 {
				first = time.Now()
			}
			n += int64(k)
			if half.IsZero() && n >= size/2 {
				half, atHalf = time.Now(), n
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		fmt.Printf("%d %f %d %f\n", n, time.Since(first).Seconds(), n-atHalf, time.Since(half).Seconds())
		return nil
	case "send":
		size, _ := strconv.ParseInt(os.Getenv("CORRAL_SHAPER_BYTES"), 10, 64)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		buf := make([]byte, 64<<10)
		for size > 0 {
			k, err := c.Write(buf[:min(int64(len(buf)), size)])
			if err != nil {
				return err
			}
			size -= int64(k)
		}
		return c.Close()
	}
	return fmt.Errorf("unknown role %q", role)
}

// pair is two network namespaces joined by a veth pair, 10.x.y.1 in A
// and 10.x.y.2 in B.
type pair struct {
	a, b         string // namespace names
	devA         string
	addrA, addrB string
}

func newPair(t *testing.T) *pair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping network test: needs root")
	}
	for _, p := range []string{"ip", "nft", "tc", "nsenter"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("skipping network test: no %s", p)
		}
	}
	var r [3]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(r[:])
	p := &pair{a: "corraltest-" + id + "-a", b: "corraltest-" + id + "-b", devA: "ct" + id + "a",
		addrA: fmt.Sprintf("10.%d.%d.1", 100+r[0]%100, r[1]), addrB: fmt.Sprintf("10.%d.%d.2", 100+r[0]%100, r[1])}
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", p.a)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", p.a).Run() })
	ip("netns", "add", p.b)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", p.b).Run() })
	devB := "ct" + id + "b"
	ip("link", "add", p.devA, "netns", p.a, "type", "veth", "peer", "name", devB, "netns", p.b)
	ip("-n", p.a, "addr", "add", p.addrA+"/24", "dev", p.devA)
	ip("-n", p.b, "addr", "add", p.addrB+"/24", "dev", devB)
	for _, ns := range []struct{ ns, dev string }{{p.a, p.devA}, {p.b, devB}} {
		ip("-n", ns.ns, "link", "set", ns.dev, "up")
		ip("-n", ns.ns, "link", "set", "lo", "up")
	}
	return p
}

// runner runs nft and tc inside namespace ns. nsenter keeps the host's
// /sys (ip netns exec mounts a fresh one without cgroups), so nft can
// resolve cgroup v2 paths.
func (p *pair) runner(ns string) Runner {
	return ExecRunner{Prefix: []string{"nsenter", "--net=/run/netns/" + ns, "--"}}
}

// transfer moves size bytes from a sender in ns "from" to a receiver in
// ns "to" listening on addr, each in the cgroup whose cgroup.procs file is
// given ("" leaves it where the test runs), and returns the rate the
// receiver measured in bytes per second over the whole transfer and over
// its second half.
func transfer(t *testing.T, from, fromProcs, to, toProcs, addr string, size int64) (whole, sustained float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := func(ns, role, procs string) (*exec.Cmd, *bufio.Reader) {
		cmd := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+ns, "--", os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "CORRAL_SHAPER_HELPER="+role, "CORRAL_SHAPER_ADDR="+addr,
			"CORRAL_SHAPER_CGROUP="+procs, "CORRAL_SHAPER_BYTES="+strconv.FormatInt(size, 10))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd, bufio.NewReader(out)
	}
	_, rout := start(to, "recv", toProcs)
	if line, err := rout.ReadString('\n'); err != nil || line != "listening\n" {
		t.Fatalf("receiver: %q, %v", line, err)
	}
	snd, _ := start(from, "send", fromProcs)
	if err := snd.Wait(); err != nil {
		t.Fatalf("sender: %v", err)
	}
	line, err := rout.ReadString('\n')
	if err != nil {
		t.Fatalf("receiver result: %q, %v", line, err)
	}
	var n, n2 int64
	var secs, secs2 float64
	if _, err := fmt.Sscanf(line, "%d %f %d %f", &n, &secs, &n2, &secs2); err != nil || n != size {
		t.Fatalf("receiver got %q, want %d bytes", line, size)
	}
	return float64(n) / secs, float64(n2) / secs2
}

// guestGroup is the guest's cgroup for one cgroup version: its
// cgroup.procs file, and the Guest fields that match it.
type guestGroup struct {
	procs string
	guest Guest
}

// v2Group makes a group under the host's cgroup v2 mount, removed when
// the test ends.
func v2Group(t *testing.T) guestGroup {
	t.Helper()
	const root = "/sys/fs/cgroup/unified"
	var fs unix.Statfs_t
	if err := unix.Statfs(root, &fs); err != nil || fs.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Skipf("skipping: no cgroup v2 at %s", root)
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	dir := filepath.Join(root, "corraltest-"+hex.EncodeToString(r[:]), "guest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cgrouptest.RemoveTree(filepath.Dir(dir), 10*time.Second); err != nil {
			t.Error(err)
		}
	})
	rel, _ := filepath.Rel("/sys/fs/cgroup", dir)
	return guestGroup{procs: filepath.Join(dir, "cgroup.procs"), guest: Guest{Cgroup2: rel, Level: 2}}
}

// v1Group mounts net_cls at a temporary directory and makes a group with
// a classid there.
func v1Group(t *testing.T) guestGroup {
	t.Helper()
	mnt := cgrouptest.MountV1(t, "net_cls,net_prio")
	var r [4]byte
	_, _ = rand.Read(r[:])
	dir := filepath.Join(mnt, "corraltest-"+hex.EncodeToString(r[:]))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cgrouptest.RemoveTree(dir, 10*time.Second); err != nil {
			t.Error(err)
		}
	})
	const classid = 0x00010020
	if err := os.WriteFile(filepath.Join(dir, "net_cls.classid"), []byte(strconv.Itoa(classid)), 0); err != nil {
		t.Fatal(err)
	}
	return guestGroup{procs: filepath.Join(dir, "cgroup.procs"), guest: Guest{ClassID: classid}}
}

func TestShapeRateV2(t *testing.T) { testShapeRate(t, v2Group) }
func TestShapeRateV1(t *testing.T) {
	if !cgrouptest.PrivateMounts(t) { // net_cls is mounted for the test alone
		return
	}
	testShapeRate(t, v1Group)
}

// testShapeRate shapes a guest's outbound traffic to 1 MiB/s and polices
// its inbound traffic at 1 MiB/s, and measures both against the same
// transfers unshaped.
func testShapeRate(t *testing.T, group func(*testing.T) guestGroup) {
	p := newPair(t)
	gg := group(t)
	ctx := context.Background()
	s := New(Config{Table: TableName("test"), Interfaces: []string{p.devA}}, p.runner(p.a))
	t.Cleanup(func() {
		if err := s.Remove(ctx); err != nil {
			t.Errorf("removing the shaping: %v", err)
		}
	})
	const limit = 1024 // KiB/s
	const size = 3 << 20
	g := gg.guest
	g.Name, g.Class = "web", 0x20
	g.Outbound = Rate{Average: limit, Burst: 32}
	g.Inbound = Rate{Average: limit, Burst: 64}

	port := 20000
	next := func(addr string) string { port++; return fmt.Sprintf("%s:%d", addr, port) }
	freeOut, _ := transfer(t, p.a, gg.procs, p.b, "", next(p.addrB), 32<<20)
	freeIn, _ := transfer(t, p.b, "", p.a, gg.procs, next(p.addrA), 32<<20)

	if err := s.Apply(ctx, []Guest{g}); err != nil {
		t.Fatal(err)
	}
	// Applying again changes nothing and fails nothing.
	if err := s.Apply(ctx, []Guest{g}); err != nil {
		t.Fatalf("applying the same guests again: %v", err)
	}
	out, _ := transfer(t, p.a, gg.procs, p.b, "", next(p.addrB), size)
	other, _ := transfer(t, p.a, "", p.b, "", next(p.addrB), 32<<20) // not the guest's: default class
	// The agent applies the same set again on every resync; that must not
	// hand the policer a fresh bucket, so the test does it throughout the
	// inbound transfer.
	stop, resynced := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				resynced <- n
				return
			case <-time.After(200 * time.Millisecond):
			}
			if err := s.Apply(ctx, []Guest{g}); err != nil {
				t.Errorf("applying again during the transfer: %v", err)
			}
			n++
		}
	}()
	in, inSustained := transfer(t, p.b, "", p.a, gg.procs, next(p.addrA), size)
	close(stop)
	if n := <-resynced; n < 2 {
		t.Errorf("applied again %d times during the inbound transfer, want at least 2", n)
	}
	const kib = 1024.0
	t.Logf("outbound: unshaped %.0f KiB/s, shaped to %d KiB/s: %.0f KiB/s; another group meanwhile %.0f KiB/s", freeOut/kib, limit, out/kib, other/kib)
	t.Logf("inbound: unpoliced %.0f KiB/s, policed at %d KiB/s: %.0f KiB/s, %.0f KiB/s in the second half", freeIn/kib, limit, in/kib, inSustained/kib)
	if out < 0.75*limit*kib || out > 1.25*limit*kib {
		t.Errorf("shaped outbound rate %.0f KiB/s, want %d KiB/s ±25%%", out/kib, limit)
	}
	if freeOut < 5*out || other < 5*out {
		t.Errorf("unshaped outbound %.0f KiB/s (another group %.0f KiB/s) is not 5× the shaped %.0f KiB/s", freeOut/kib, other/kib, out/kib)
	}
	// nft's byte limit holds a bucket of one second at the rate plus the
	// burst (tokens_max = unit × (rate + burst) / rate in the kernel's
	// nft_limit.c), full when the rule is made: the first rate+burst bytes
	// pass unpoliced, so the whole transfer is bounded by the token
	// bucket, and the second half, after the bucket drained, is at the
	// rate.
	bucket := float64(limit+g.Inbound.Burst) * kib
	if bound := limit * kib * size / (size - bucket); in > 1.25*bound || in < 0.1*limit*kib {
		t.Errorf("policed inbound rate %.0f KiB/s, want at most the token bucket's %.0f KiB/s +25%% (and some traffic through)", in/kib, bound/kib)
	}
	// A policer drops rather than queues: TCP backs off and, should the
	// sender stall for a moment on a loaded host (the race detector, other
	// tests), the bucket fills again and passes one more second at once.
	// So the sustained inbound rate is held to a wider band than the
	// shaped outbound one; unpoliced it is hundreds of times more.
	if inSustained < 0.5*limit*kib || inSustained > 1.6*limit*kib {
		t.Errorf("policed inbound rate in the second half %.0f KiB/s, want %d KiB/s within 0.5-1.6×", inSustained/kib, limit)
	}
	if freeIn < 5*in {
		t.Errorf("unpoliced inbound %.0f KiB/s is not 5× the policed %.0f KiB/s", freeIn/kib, in/kib)
	}

	// A changed policer is a new limit object; the old one goes.
	run := p.runner(p.a)
	changed := g
	changed.Inbound.Average = 2 * limit
	if err := s.Apply(ctx, []Guest{changed}); err != nil {
		t.Fatalf("changing the inbound limit: %v", err)
	}
	if o, err := run.Run(ctx, "", "nft", "list", "table", "inet", TableName("test")); err != nil ||
		!strings.Contains(o, "limit in_20_2048_64 {") || strings.Contains(o, "in_20_1024_64") || strings.Count(o, "limit name") != 1 {
		t.Errorf("after changing the inbound limit to %d KiB/s the table is:\n%s %v", 2*limit, o, err)
	}

	// Dropping the guest deletes its class and rules; removing deletes
	// the qdisc and the table.
	if err := s.Apply(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if o, _ := run.Run(ctx, "", "tc", "qdisc", "show", "dev", p.devA, "root"); strings.Contains(o, "htb") {
		t.Errorf("the HTB qdisc stayed after the last guest went: %s", o)
	}
	if o, err := run.Run(ctx, "", "nft", "list", "tables"); err != nil || strings.Contains(o, TableName("test")) {
		t.Errorf("the table stayed after the last guest went: %s %v", o, err)
	}
}
