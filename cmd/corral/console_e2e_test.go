package main

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/nodeagent/driver/drivertest"
)

// syncBuffer is a bytes.Buffer a child process writes while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestGuestConsoleAndDisk runs a VM under TCG through corral dev with a
// disk over a raw base image, attaches to its serial console with corral
// guest console, types into the guest's shell and reads its answer (the
// base's first bytes, read from /dev/vda), detaches with Ctrl-], and
// checks that a second session is refused while one is attached, that no
// token means no console, that the base is never written and that
// destroy removes the guest's overlay.
func TestGuestConsoleAndDisk(t *testing.T) {
	rep := cgrouptest.RequireHost(t)
	part := cgrouptest.NewPartition(t, rep)
	a := drivertest.VM(t)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skipf("skipping: %v (deploy/testassets.sh installs qemu-utils)", err)
	}
	const pattern = "CORRAL-CONSOLE-BASE"
	base := filepath.Join(t.TempDir(), "base.raw")
	img := make([]byte, 1<<20)
	copy(img, pattern)
	if err := os.WriteFile(base, img, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img)

	dir := t.TempDir()
	p := startDevWith(t, dir, "--cgroup-partition", part, "--qemu-accel", "tcg")
	t.Cleanup(func() { p.stop(syscall.SIGTERM, waitTimeout) })
	t.Cleanup(func() { p.corral("guest", "destroy", "vm") })
	p.ok("operator", "scheduler", "set-config", "--cpu-overcommit", "8")
	p.ok("guest", "create", "vm", "--driver", "qemu", "--memory", "128MiB", "--kernel", a.Kernel, "--initrd", a.Initramfs,
		"--disk", base+",format=raw,cache=writeback")
	waitGuest(t, p, "vm", "ran", func(g *api.GuestView) bool { return g.Status == api.StatusRunning && g.PID > 0 })
	guestDir := filepath.Join(dir, "agent", "guests", "vm")
	guestLog := func() string {
		b, _ := os.ReadFile(filepath.Join(guestDir, "guest.log"))
		return string(b)
	}
	waitFor(t, "the VM's shell on its serial console", func() bool { return strings.Contains(guestLog(), "CORRAL-GUEST-SHELL") },
		func() string { return "serial log tail: " + tail(guestLog(), 2000) })

	// Without a token the console is refused, as every route.
	var noToken []string
	for _, e := range p.env() {
		if !strings.HasPrefix(e, "CORRAL_TOKEN=") {
			noToken = append(noToken, e)
		}
	}
	if r := runCorral(t, noToken, "guest", "console", "vm"); r.code == 0 || !strings.Contains(strings.ToLower(r.stderr), "token") {
		t.Errorf("console without a token: exit %d, stderr %q; want a refusal naming the token", r.code, r.stderr)
	}

	cmd := exec.Command(corralBin, "guest", "console", "vm")
	cmd.Env = append(childEnv(), p.env()...)
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	describe := func() string { return "console output: " + tail(out.String(), 2000) + "\nstderr: " + errOut.String() }
	// Input typed before the shell reads is lost: probe until it answers.
	start := time.Now()
	last := time.Time{}
	waitFor(t, "the guest's shell to answer through corral guest console", func() bool {
		if time.Since(last) > time.Second {
			_, _ = io.WriteString(stdin, "echo READY-$((3*3))\n")
			last = time.Now()
		}
		return strings.Contains(out.String(), "READY-9")
	}, describe)
	t.Logf("console answered %v after attaching", time.Since(start).Round(time.Millisecond))
	typed := time.Now()
	_, _ = io.WriteString(stdin, "dd if=/dev/vda bs=19 count=1 2>/dev/null; echo; echo DONE-$((6*7))\n")
	waitFor(t, "the guest to read its disk", func() bool { return strings.Contains(out.String(), "DONE-42") }, describe)
	t.Logf("a command's answer came back %v after it was typed", time.Since(typed).Round(time.Millisecond))
	if got := out.String(); !strings.Contains(got, "\n"+pattern) {
		t.Errorf("the guest read no %q from /dev/vda; console output: %q", pattern, tail(got, 500))
	}

	// One session at a time: a second attach is refused.
	if r := p.corral("guest", "console", "vm"); r.code == 0 || !strings.Contains(r.stderr, "--force") {
		t.Errorf("a second console session: exit %d, stderr %q; want a refusal pointing to --force", r.code, r.stderr)
	}

	// Ctrl-] detaches.
	_, _ = stdin.Write([]byte{0x1d})
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("corral guest console after Ctrl-]: %v; %s", err, describe())
		}
	case <-time.After(waitTimeout):
		t.Fatalf("corral guest console did not end after Ctrl-]; %s", describe())
	}

	overlay := filepath.Join(guestDir, "disk0.qcow2")
	if _, err := os.Stat(overlay); err != nil {
		t.Errorf("the guest has no overlay: %v", err)
	}
	p.ok("guest", "destroy", "vm")
	waitFor(t, "destroy to remove the overlay", func() bool {
		_, err := os.Stat(overlay)
		return os.IsNotExist(err)
	}, func() string { return overlay + " is still there" })
	if b, err := os.ReadFile(base); err != nil || sha256.Sum256(b) != sum {
		t.Errorf("the base image changed (%v)", err)
	}
}
