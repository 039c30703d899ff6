// Package cgrouptest provides test support for cgroupdriver: fake cgroup
// layouts in a temporary directory, and helpers for tests against the real
// host's cgroups that skip when they cannot run and leave nothing behind.
package cgrouptest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
)

// Mount is one cgroup mount of a fake host.
type Mount struct {
	// Point is the mount point below the fake root, e.g. "/dev/cgroups".
	Point string
	// Root is the group mounted there; "" means "/".
	Root string
	// V2 marks a cgroup2 mount; otherwise Options are the v1 super block
	// options, e.g. "rw,cpu,cpuacct".
	V2      bool
	Options string
}

// Fake is a fake host: a directory tree standing in for the mounted
// hierarchies, and the texts of /proc/self/mountinfo and /proc/self/cgroup
// that describe it.
type Fake struct {
	Root       string // the temporary directory all mount points are below
	Mountinfo  string
	SelfCgroup string
}

// NewFake builds a fake host with the given mounts. selfCgroup is the text
// of /proc/self/cgroup. Each mount point gets the root-level files the
// driver probes: cpuset CPUs 0-3 and node 0, swap accounting, BFQ
// statistics, and on v2 cgroup.controllers listing v2Controllers.
// Directories for the groups named in selfCgroup are created too.
func NewFake(t testing.TB, mounts []Mount, selfCgroup string, v2Controllers string) *Fake {
	t.Helper()
	f := &Fake{Root: t.TempDir(), SelfCgroup: selfCgroup}
	var mi strings.Builder
	own := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(selfCgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 {
			for _, c := range strings.Split(parts[1], ",") {
				own[c] = parts[2]
			}
		}
	}
	for i, m := range mounts {
		dir := filepath.Join(f.Root, m.Point)
		root := m.Root
		if root == "" {
			root = "/"
		}
		fstype, opts := "cgroup", m.Options
		if m.V2 {
			fstype, opts = "cgroup2", "rw,nsdelegate"
		}
		fmt.Fprintf(&mi, "%d 1 0:%d %s %s rw,nosuid,nodev,noexec,relatime shared:%d - %s %s %s\n",
			30+i, 40+i, escape(root), escape(dir), 10+i, fstype, fstype, opts)
		groups := []string{"/"}
		if m.V2 {
			groups = append(groups, own[""])
		}
		for _, o := range strings.Split(opts, ",") {
			if g, ok := own[o]; ok {
				groups = append(groups, g)
			}
		}
		for _, g := range groups {
			gdir := filepath.Join(dir, strings.TrimPrefix(g, root))
			writeFiles(t, gdir, opts, m.V2, v2Controllers)
		}
	}
	f.Mountinfo = mi.String()
	return f
}

// escape does what the kernel does to paths in mountinfo.
func escape(p string) string {
	return strings.NewReplacer(" ", `\040`, "\t", `\011`, "\n", `\012`, `\`, `\134`).Replace(p)
}

func writeFiles(t testing.TB, dir, opts string, v2 bool, v2Controllers string) {
	t.Helper()
	files := map[string]string{"cgroup.procs": ""}
	has := func(c string) bool { return v2 || strings.Contains(","+opts+",", ","+c+",") }
	if v2 {
		files["cgroup.controllers"] = v2Controllers
		files["cgroup.subtree_control"] = ""
		files["cpuset.cpus.effective"] = "0-3"
		files["cpuset.mems.effective"] = "0"
	} else {
		if has("cpuset") {
			files["cpuset.cpus"] = "0-3"
			files["cpuset.mems"] = "0"
			files["cpuset.effective_cpus"] = "0-3"
			files["cpuset.effective_mems"] = "0"
		}
		if has("memory") {
			files["memory.memsw.limit_in_bytes"] = "9223372036854771712"
		}
		if has("blkio") {
			files["blkio.bfq.io_service_bytes"] = ""
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Report runs cgroupdriver.Detect on the fake host.
func (f *Fake) Report(t testing.TB) cgroupdriver.Report {
	t.Helper()
	rep, err := cgroupdriver.Detect(strings.NewReader(f.Mountinfo), strings.NewReader(f.SelfCgroup))
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	return rep
}

// Materialize performs writes on the fake host as plain file writes,
// creating directories and files as needed (a fake cgroupfs has no kernel
// to do it). A write with an empty File is a mkdir.
func (f *Fake) Materialize(t testing.TB, writes []cgroupdriver.Write) {
	t.Helper()
	for _, w := range writes {
		if !strings.HasPrefix(w.Dir, f.Root) {
			t.Fatalf("write outside the fake host: %s", w.Dir)
		}
		if err := os.MkdirAll(w.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if w.File == "" {
			continue
		}
		if err := os.WriteFile(w.Path(), []byte(w.Value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Relative rewrites a path below the fake root as $ROOT/..., for golden
// files.
func (f *Fake) Relative(p string) string {
	return strings.ReplaceAll(p, f.Root, "$ROOT")
}
