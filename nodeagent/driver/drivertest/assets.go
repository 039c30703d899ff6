// Package drivertest finds (building them once when missing) the guest
// images the driver tests boot, and sets up drivers on the real host for
// tests of packages that run guests.
package drivertest

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// DefaultDir is where deploy/testassets.sh caches the images unless
// CORRAL_ASSETS names another directory.
const DefaultDir = "/var/cache/corral-test-assets"

// Assets are the images deploy/testassets.sh builds.
type Assets struct {
	Rootfs    string // busybox root directory for lxc guests
	Initramfs string // busybox initramfs whose /init prints Marker
	Kernel    string // vmlinuz of Debian's cloud kernel
	Disk      string // a blank raw disk image
}

// Marker is what the initramfs prints on the serial console once /init
// runs (and listens for the power button).
const Marker = "CORRAL-GUEST-UP"

// Dir returns the asset cache directory.
func Dir() string {
	if d := os.Getenv("CORRAL_ASSETS"); d != "" {
		return d
	}
	return DefaultDir
}

// Rootfs returns the busybox rootfs, building the assets when missing, and
// skips t, saying why, when that fails.
func Rootfs(t testing.TB) string {
	t.Helper()
	return build(t, "rootfs").Rootfs
}

// VM returns the kernel, initramfs and disk image, building them when
// missing, and skips t, saying why, when that fails or QEMU is missing.
func VM(t testing.TB) Assets {
	t.Helper()
	a := build(t, "all")
	if a.Kernel == "" || a.Initramfs == "" || a.Disk == "" {
		t.Skipf("skipping: deploy/testassets.sh did not name a kernel, initramfs and disk: %+v", a)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skipf("skipping: %v", err)
	}
	return a
}

// build runs deploy/testassets.sh for what ("rootfs" or "all"), which builds what is missing (under a
// lock against concurrent runs) and prints the paths; a run that finds
// everything cached takes milliseconds. A failure skips t with the
// script's last lines: a host without a route to the Debian mirror has no
// kernel to boot.
func build(t testing.TB, what string) Assets {
	t.Helper()
	script, err := findScript()
	if err != nil {
		t.Skipf("skipping: cannot build test assets: %v", err)
	}
	cmd := exec.Command("bash", script, what)
	cmd.Env = append(os.Environ(), "CORRAL_ASSETS="+Dir())
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Skipf("skipping: %s failed (%v); its last lines:\n%s", script, err, lastLines(errOut.String()+out.String(), 15))
	}
	var a Assets
	for _, line := range strings.Split(out.String(), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "ROOTFS":
			a.Rootfs = v
		case "INITRAMFS":
			a.Initramfs = v
		case "KERNEL":
			a.Kernel = v
		case "DISK":
			a.Disk = v
		}
	}
	if a.Rootfs == "" {
		t.Skipf("skipping: %s printed no ROOTFS:\n%s", script, out.String())
	}
	return a
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// findScript walks up from the working directory to the module root.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if exists(filepath.Join(dir, "go.mod")) {
			p := filepath.Join(dir, "deploy", "testassets.sh")
			if !exists(p) {
				return "", errors.New(p + " not found")
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
