package cgroupdriver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/containerd/cgroups/v3"
)

// Mode is how cgroups are mounted on a host.
type Mode string

const (
	// ModeV1: only cgroup v1 hierarchies, controllers in any grouping.
	ModeV1 Mode = "v1"
	// ModeHybrid: cgroup v1 hierarchies plus a cgroup2 mount (usually
	// /sys/fs/cgroup/unified, often without controllers).
	ModeHybrid Mode = "hybrid"
	// ModeV2: only the unified cgroup2 hierarchy.
	ModeV2 Mode = "v2"
)

// Hierarchy is one mounted cgroup hierarchy as seen by this process.
type Hierarchy struct {
	// Version is 1 or 2.
	Version int `json:"version"`
	// Controllers are, on v1, the controllers mounted together in this
	// hierarchy, with a named hierarchy listed as "name=<name>"; on v2, the
	// controllers the kernel offers at the mount (cgroup.controllers), filled
	// in by [DetectHost] and empty from [Detect].
	Controllers []string `json:"controllers,omitempty"`
	// MountPoint is where the hierarchy is mounted, e.g. /dev/cgroups.
	MountPoint string `json:"mount_point"`
	// MountRoot is the group mounted at MountPoint: "/" unless the hierarchy
	// was bind-mounted from below its root or a cgroup namespace is in use.
	MountRoot string `json:"mount_root"`
	// Group is this process's own group in the hierarchy, as listed in
	// /proc/self/cgroup.
	Group string `json:"group"`
}

// Has reports whether the hierarchy carries the named controller (or
// "name=<name>" for a named v1 hierarchy).
func (h Hierarchy) Has(controller string) bool { return slices.Contains(h.Controllers, controller) }

// Dir returns the file system directory of the cgroup path group in h. It
// fails when group lies outside the part of the hierarchy that is mounted.
func (h Hierarchy) Dir(group string) (string, error) {
	group = path.Clean("/" + group)
	root := path.Clean("/" + h.MountRoot)
	if root == "/" {
		return path.Join(h.MountPoint, group), nil
	}
	if group != root && !strings.HasPrefix(group, root+"/") {
		return "", fmt.Errorf("corral: cgroup %s is outside %s, the part of the hierarchy mounted at %s", group, root, h.MountPoint)
	}
	return path.Join(h.MountPoint, strings.TrimPrefix(group, root)), nil
}

func (h Hierarchy) String() string {
	if h.Version == 2 {
		return "cgroup2 at " + h.MountPoint
	}
	return strings.Join(h.Controllers, ",") + " at " + h.MountPoint
}

// Report is what [Detect] found: the mode and every mounted hierarchy. It is
// meant to be logged by the agent and sent, JSON-encoded, when the node
// registers.
type Report struct {
	Mode        Mode        `json:"mode"`
	Hierarchies []Hierarchy `json:"hierarchies"`
}

// clone returns a deep copy, so that callers cannot change a driver's view.
func (r Report) clone() Report {
	c := Report{Mode: r.Mode, Hierarchies: slices.Clone(r.Hierarchies)}
	for i := range c.Hierarchies {
		c.Hierarchies[i].Controllers = slices.Clone(c.Hierarchies[i].Controllers)
	}
	return c
}

// Controller returns the hierarchy that carries a controller: its v1
// hierarchy if mounted, otherwise the v2 hierarchy if the controller is
// listed there.
func (r Report) Controller(name string) (Hierarchy, bool) {
	for _, h := range r.Hierarchies {
		if h.Version == 1 && h.Has(name) {
			return h, true
		}
	}
	for _, h := range r.Hierarchies {
		if h.Version == 2 && h.Has(name) {
			return h, true
		}
	}
	return Hierarchy{}, false
}

// Unified returns the cgroup2 hierarchy, if mounted.
func (r Report) Unified() (Hierarchy, bool) {
	for _, h := range r.Hierarchies {
		if h.Version == 2 {
			return h, true
		}
	}
	return Hierarchy{}, false
}

// isV1Option reports whether a cgroup v1 super block option is a mount
// option rather than a controller.
func isV1Option(o string) bool {
	switch o {
	case "rw", "ro", "xattr", "noprefix", "none", "clone_children", "cpuset_v2_mode", "favordynmods":
		return true
	}
	return strings.Contains(o, "=") && !strings.HasPrefix(o, "name=")
}

// Detect parses the contents of /proc/self/mountinfo and /proc/self/cgroup
// into a [Report]. It is pure: v2 controllers are left empty (see
// [DetectHost]). A hierarchy mounted more than once is reported once, at the
// mount through which this process's group is reachable, preferring the one
// showing the most of the tree. Lines of /proc/self/cgroup for hierarchies
// that are not mounted are ignored.
func Detect(mountinfo, selfCgroup io.Reader) (Report, error) {
	own, unified, err := cgroups.ParseCgroupFromReaderUnified(selfCgroup)
	if err != nil {
		return Report{}, fmt.Errorf("corral: parse /proc/self/cgroup: %w", err)
	}
	var (
		rep   Report
		index = map[string]int{} // hierarchy key -> position in rep.Hierarchies
	)
	s := bufio.NewScanner(mountinfo)
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for s.Scan() {
		m, ok, err := parseMountinfoLine(s.Text())
		if err != nil {
			return Report{}, err
		}
		if !ok {
			continue
		}
		h := Hierarchy{MountPoint: m.point, MountRoot: m.root}
		var key string
		switch m.fstype {
		case "cgroup2":
			h.Version, key = 2, "cgroup2"
			h.Group = unified
			if h.Group == "" {
				// cgroup v1 only systems have no "0::" line; a cgroup2
				// mount there still is the root for this process.
				h.Group = "/"
			}
		case "cgroup":
			h.Version = 1
			for _, o := range strings.Split(m.superOpts, ",") {
				if o == "noprefix" {
					return Report{}, fmt.Errorf("corral: cgroup v1 at %s is mounted with noprefix, which corral does not support", m.point)
				}
				if isV1Option(o) {
					continue
				}
				h.Controllers = append(h.Controllers, o)
			}
			if len(h.Controllers) == 0 {
				continue
			}
			key = strings.Join(h.Controllers, ",")
			h.Group = own[h.Controllers[0]]
		default:
			continue
		}
		i, seen := index[key]
		if !seen {
			index[key] = len(rep.Hierarchies)
			rep.Hierarchies = append(rep.Hierarchies, h)
			continue
		}
		if better(h, rep.Hierarchies[i]) {
			rep.Hierarchies[i] = h
		}
	}
	if err := s.Err(); err != nil {
		return Report{}, fmt.Errorf("corral: read mountinfo: %w", err)
	}
	var v1, v2 bool
	for _, h := range rep.Hierarchies {
		v1 = v1 || h.Version == 1
		v2 = v2 || h.Version == 2
	}
	switch {
	case v1 && v2:
		rep.Mode = ModeHybrid
	case v1:
		rep.Mode = ModeV1
	case v2:
		rep.Mode = ModeV2
	default:
		return Report{}, ErrNoCgroups
	}
	return rep, nil
}

// better reports whether mount a of a hierarchy is preferable to mount b:
// this process's group must be reachable through it, and a shorter mount
// root shows more of the tree.
func better(a, b Hierarchy) bool {
	_, errA := a.Dir(a.Group)
	_, errB := b.Dir(b.Group)
	if (errA == nil) != (errB == nil) {
		return errA == nil
	}
	return len(path.Clean(a.MountRoot)) < len(path.Clean(b.MountRoot))
}

type mount struct {
	root, point, fstype, superOpts string
}

// parseMountinfoLine parses one line of proc(5) mountinfo. ok is false for
// file systems other than cgroup and cgroup2.
func parseMountinfoLine(line string) (m mount, ok bool, err error) {
	fields := strings.Fields(line)
	sep := slices.Index(fields, "-")
	if sep < 6 || len(fields) < sep+4 {
		if strings.TrimSpace(line) == "" {
			return mount{}, false, nil
		}
		return mount{}, false, fmt.Errorf("corral: malformed mountinfo line %q", line)
	}
	m = mount{
		root:      unescapeMountinfo(fields[3]),
		point:     unescapeMountinfo(fields[4]),
		fstype:    fields[sep+1],
		superOpts: fields[sep+3],
	}
	return m, m.fstype == "cgroup" || m.fstype == "cgroup2", nil
}

// unescapeMountinfo undoes the kernel's octal escaping of space, tab,
// newline and backslash in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

// DetectHost runs [Detect] on this process's /proc/self/mountinfo and
// /proc/self/cgroup and fills in the controllers offered by a cgroup2 mount.
func DetectHost() (Report, error) {
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return Report{}, fmt.Errorf("corral: %w", err)
	}
	defer mi.Close()
	cg, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return Report{}, fmt.Errorf("corral: %w", err)
	}
	defer cg.Close()
	rep, err := Detect(mi, cg)
	if err != nil {
		return Report{}, err
	}
	for i, h := range rep.Hierarchies {
		if h.Version != 2 {
			continue
		}
		b, err := os.ReadFile(path.Join(h.MountPoint, "cgroup.controllers"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return Report{}, fmt.Errorf("corral: %w", err)
		}
		rep.Hierarchies[i].Controllers = strings.Fields(string(b))
	}
	return rep, nil
}
