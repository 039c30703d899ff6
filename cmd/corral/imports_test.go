package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// This file enforces the layering that each package's doc.go states: which
// packages of ours a package may import, what must never appear among its
// dependencies, which package alone may import a third-party module, and
// the fixed top-level layout of the repository.

// importRule says what one package of ours may depend on. Paths of ours
// are relative to the module ("coordinator/api"); a path ending in "/..."
// also covers everything below it.
type importRule struct {
	// imports lists the packages of ours it may import directly.
	imports []string
	// anyOurs allows every package of ours not excluded by never.
	anyOurs bool
	// never lists what must not be among its transitive dependencies:
	// packages of ours or third-party import paths.
	never []string
	// withTests also checks the imports of its _test.go files, for a
	// package whose code is mostly tests.
	withTests bool
	// why is the rule's reason, quoted in failures.
	why string
}

// importRules holds one rule per package of ours. A new package needs one
// here, and its doc.go should say the same in words.
func importRules() map[string]importRule {
	raftModules := []string{
		"github.com/hashicorp/raft/...",
		"github.com/hashicorp/raft-boltdb/...",
		"go.etcd.io/bbolt/...",
		"github.com/boltdb/bolt/...",
	}
	natsModules := []string{
		"github.com/nats-io/nats.go/...",
		"github.com/nats-io/nats-server/...",
	}
	// The fixture packages are for tests only.
	testSupport := []string{
		"scheduler/schedulertest",
		"cgroupdriver/cgrouptest",
		"nodeagent/driver/drivertest",
		"simtest/...",
	}
	never := func(groups ...[]string) []string { return slices.Concat(groups...) }
	return map[string]importRule{
		"events": {
			never: never(raftModules, natsModules),
			why:   "the schema imports nothing of ours; every other package may import it",
		},
		"scheduler": {
			never: never(raftModules, natsModules),
			why:   "placement is pure over its own view types; the cluster converts its state into them",
		},
		"scheduler/schedulertest": {
			imports: []string{"scheduler"},
			never:   never(raftModules, natsModules),
			why:     "scheduler fixtures build on the scheduler alone",
		},
		"cgroupdriver": {
			never: never(raftModules, natsModules),
			why:   "the cgroup driver imports nothing of ours",
		},
		"cgroupdriver/cgrouptest": {
			imports: []string{"cgroupdriver"},
			never:   never(raftModules, natsModules),
			why:     "the fake cgroupfs builds on the cgroup driver alone",
		},
		"coordinator/api": {
			imports: []string{"events", "cgroupdriver"},
			never: never(raftModules, natsModules, []string{
				"coordinator", "coordinator/cluster", "coordinator/bus", "scheduler/...", "nodeagent/...", "cmd/...",
			}),
			why: "the wire API is imported by the CLI and the agent and must not drag the server, raft or NATS in",
		},
		"coordinator/pki": {
			never: never(raftModules, natsModules, []string{"coordinator", "coordinator/cluster", "coordinator/api", "coordinator/bus", "coordinator/acl", "nodeagent/...", "scheduler/...", "cmd/..."}),
			why:   "the certificate authority is standard library only, so every member of the cluster can import it",
		},
		"coordinator/acl": {
			imports: []string{"events"},
			never:   never(raftModules, natsModules, []string{"coordinator/...", "nodeagent/...", "scheduler/...", "cmd/..."}),
			why:     "the authorization model is pure and imports the schema alone, so the CLI, the state machine and the server share it",
		},
		"coordinator/cluster": {
			imports: []string{"coordinator/acl", "coordinator/api", "events", "scheduler", "cgroupdriver"},
			never:   never(raftModules, natsModules, []string{"coordinator", "coordinator/bus", "nodeagent/...", "cmd/..."}),
			why:     "the state machine is pure: no raft, no bus, no server, no agent",
		},
		"coordinator/bus": {
			imports: []string{"events", "coordinator/pki"},
			never:   never(raftModules),
			why:     "the bus is delivery only and imports events and the certificates it checks alone",
		},
		"coordinator": {
			imports: []string{"coordinator/acl", "coordinator/api", "coordinator/cluster", "coordinator/bus", "coordinator/pki", "events", "scheduler"},
			never:   never([]string{"nodeagent/...", "cmd/..."}, testSupport),
			why:     "the server builds on the API, the state machine and the bus, never on the agent",
		},
		// nodeagent reaches nats-server through coordinator/bus, which
		// also embeds the server; only a split of the bus could forbid it.
		"nodeagent": {
			imports: []string{"coordinator/api", "coordinator/bus", "cgroupdriver", "events", "nodeagent/driver", "nodeagent/network", "nodeagent/shaper"},
			never: never(raftModules, testSupport, []string{
				"coordinator", "coordinator/cluster", "scheduler/...", "cmd/...",
			}),
			why: "the agent talks to the coordinator through the API and the bus, never through the server, its state or raft",
		},
		"nodeagent/driver": {
			imports: []string{"cgroupdriver", "events"},
			never:   never(raftModules, natsModules, testSupport, []string{"coordinator/...", "scheduler/...", "nodeagent", "cmd/..."}),
			why:     "the guest drivers sit below the agent and know nothing of the cluster",
		},
		"nodeagent/shaper": {
			imports: []string{},
			never:   never(raftModules, natsModules, testSupport, []string{"coordinator/...", "scheduler/...", "cgroupdriver", "events", "nodeagent", "nodeagent/driver", "cmd/..."}),
			why:     "the shaper turns shaped guests into nft and tc and knows nothing of the cluster or of cgroups",
		},
		"nodeagent/network": {
			imports: []string{},
			never:   never(raftModules, natsModules, testSupport, []string{"coordinator/...", "scheduler/...", "cgroupdriver", "events", "nodeagent", "nodeagent/driver", "cmd/..."}),
			why:     "the node's bridge and address allocation know nothing of the cluster, of cgroups or of the drivers",
		},
		"nodeagent/driver/drivertest": {
			imports: []string{"nodeagent/driver", "cgroupdriver", "cgroupdriver/cgrouptest", "events"},
			never:   never(raftModules, natsModules, []string{"coordinator/...", "scheduler/...", "nodeagent", "cmd/..."}),
			why:     "driver fixtures build on the drivers and the cgroup fixtures alone",
		},
		"cmd/corral": {
			imports: []string{
				"events", "scheduler", "cgroupdriver", "coordinator", "coordinator/acl", "coordinator/api", "coordinator/bus", "coordinator/pki",
				"coordinator/cluster", "nodeagent", "nodeagent/driver", "nodeagent/network", "nodeagent/shaper", "cmd/corral/domainxml",
			},
			never: testSupport,
			why:   "the binary wires the daemons and the client; test fixtures stay out of it",
		},
		"cmd/corral/domainxml": {
			imports: []string{"coordinator/api", "events"},
			never:   never(raftModules, natsModules, testSupport, []string{"coordinator", "coordinator/cluster", "coordinator/bus", "nodeagent/...", "scheduler/..."}),
			why:     "the libvirt import maps a domain's XML to an API request and talks to nothing",
		},
		"simtest/...": {
			anyOurs:   true,
			never:     []string{"cmd/..."},
			withTests: true,
			why:       "the simulation runs the libraries in one process, not the binary's wiring",
		},
	}
}

// soleImporters names, per third-party import path, the only packages of
// ours that may import it directly.
func soleImporters() map[string][]string {
	return map[string][]string{
		"github.com/nats-io/nats.go/...":       {"coordinator/bus"},
		"github.com/nats-io/nats-server/...":   {"coordinator/bus"},
		"github.com/hashicorp/raft/...":        {"coordinator", "simtest"}, // simtest hands the servers raft's in-memory transport and stores
		"github.com/hashicorp/raft-boltdb/...": {"coordinator"},
		"github.com/hashicorp/go-hclog/...":    {"coordinator"},
		"go.etcd.io/bbolt/...":                 {"coordinator"},
		"github.com/containerd/cgroups/...":    {"cgroupdriver"},
		"github.com/spf13/cobra/...":           {"cmd/corral"},
		"libvirt.org/go/libvirtxml/...":        {"cmd/corral/domainxml"},
	}
}

// listedPackage is what go list says of one package.
type listedPackage struct {
	ImportPath   string
	DepOnly      bool
	Imports      []string
	TestImports  []string
	XTestImports []string
	Module       *struct {
		Path string
		Main bool
	}
	Error *struct{ Err string }
}

// matches reports whether path is pattern or, for "x/...", below x.
func matches(pattern, path string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}

// goBinary finds the go command, or says why not.
func goBinary() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no go command in PATH or at %s", p)
	}
	return p, nil
}

// repoRoot is the module's root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("%s is not the repository root: %v", root, err)
	}
	return root
}

// listPackages runs go list once over the module with every dependency.
func listPackages(t *testing.T, root string) (module string, ours []*listedPackage, all map[string]*listedPackage) {
	t.Helper()
	gobin, err := goBinary()
	if err != nil {
		t.Skipf("cannot check imports: %v", err)
	}
	cmd := exec.Command(gobin, "list", "-e", "-deps",
		"-json=ImportPath,DepOnly,Imports,TestImports,XTestImports,Module,Error", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	all = map[string]*listedPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(listedPackage)
		if err := dec.Decode(p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		all[p.ImportPath] = p
		if p.DepOnly {
			continue
		}
		ours = append(ours, p)
		if p.Module != nil && p.Module.Main {
			module = p.Module.Path
		}
	}
	if module == "" || len(ours) == 0 {
		t.Fatalf("go list found no packages of the main module under %s", root)
	}
	return module, ours, all
}

// TestImportRules checks every package of the module against its rule in
// importRules, and every direct import of a third-party module against
// soleImporters. Only non-test imports count, unless a rule says otherwise.
func TestImportRules(t *testing.T) {
	module, ours, all := listPackages(t, repoRoot(t))
	rules := importRules()
	sole := soleImporters()

	// rel turns an import path of ours into its path in the module; ok is
	// false for every other path.
	rel := func(path string) (string, bool) {
		if path == module {
			return ".", true
		}
		r, ok := strings.CutPrefix(path, module+"/")
		return r, ok
	}
	ruleFor := func(name string) (string, importRule, bool) {
		if r, ok := rules[name]; ok {
			return name, r, true
		}
		best := ""
		for k := range rules {
			if strings.HasSuffix(k, "/...") && matches(k, name) && len(k) > len(best) {
				best = k
			}
		}
		return best, rules[best], best != ""
	}
	// pattern turns a rule's path into an import-path pattern: a path
	// whose first element has no dot is ours.
	pattern := func(p string) string {
		if first, _, _ := strings.Cut(p, "/"); !strings.Contains(first, ".") {
			return module + "/" + p
		}
		return p
	}
	short := func(path string) string {
		if r, ok := rel(path); ok {
			return r
		}
		return path
	}

	used := map[string]bool{}
	for _, p := range ours {
		name, ok := rel(p.ImportPath)
		if !ok {
			t.Errorf("%s is listed by go list ./... but is not in module %s", p.ImportPath, module)
			continue
		}
		if p.Error != nil {
			t.Errorf("%s: go list: %s", name, p.Error.Err)
		}
		key, rule, ok := ruleFor(name)
		if !ok {
			t.Errorf("package %s has no import rule: add one to importRules in cmd/corral/imports_test.go, "+
				"and say in its doc.go what it may import and what it must never import", name)
			continue
		}
		used[key] = true

		direct := slices.Clone(p.Imports)
		if rule.withTests {
			direct = append(direct, p.TestImports...)
			direct = append(direct, p.XTestImports...)
		}
		slices.Sort(direct)
		direct = slices.Compact(direct)

		// Direct imports: packages of ours against the rule's list,
		// third-party modules against their sole importers.
		for _, imp := range direct {
			if r, ours := rel(imp); ours {
				if r == name || rule.anyOurs || slices.Contains(rule.imports, r) {
					continue
				}
				allowed := "nothing of ours"
				if len(rule.imports) > 0 {
					allowed = "only " + strings.Join(rule.imports, ", ")
				}
				t.Errorf("%s imports %s, but its rule (%s) allows %s: %s", name, r, key, allowed, rule.why)
				continue
			}
			for mod, owners := range sole {
				if matches(mod, imp) && !slices.Contains(owners, name) {
					t.Errorf("%s imports %s directly, but only %s may import %s",
						name, imp, strings.Join(owners, ", "), strings.TrimSuffix(mod, "/..."))
				}
			}
		}

		// Transitive dependencies: a breadth-first walk from the direct
		// imports, so each violation names its shortest chain.
		via := map[string]string{}
		queue := []string{}
		for _, imp := range direct {
			if _, seen := via[imp]; !seen && imp != p.ImportPath {
				via[imp] = p.ImportPath
				queue = append(queue, imp)
			}
		}
		reported := map[string]bool{}
		for len(queue) > 0 {
			dep := queue[0]
			queue = queue[1:]
			for _, nv := range rule.never {
				if reported[nv] || !matches(pattern(nv), dep) {
					continue
				}
				reported[nv] = true
				chain := []string{short(dep)}
				for at := via[dep]; at != p.ImportPath; at = via[at] {
					chain = append(chain, short(at))
				}
				chain = append(chain, name)
				slices.Reverse(chain)
				t.Errorf("%s depends on %s (%s), but its rule (%s) says never %s: %s",
					name, short(dep), strings.Join(chain, " -> "), key, nv, rule.why)
			}
			if lp := all[dep]; lp != nil {
				for _, next := range lp.Imports {
					if _, seen := via[next]; !seen {
						via[next] = dep
						queue = append(queue, next)
					}
				}
			}
		}
	}
	for key := range rules {
		if !used[key] {
			t.Logf("rule %s matches no package (yet)", key)
		}
	}
}

// TestImportLayout checks that the repository's top level holds only the
// fixed layout: the package trees, deploy, .ci, the module files, README.md,
// test.sh, dotfiles, and what the top-level .gitignore ignores (build
// output).
func TestImportLayout(t *testing.T) {
	root := repoRoot(t)
	dirs := []string{"cmd", "coordinator", "nodeagent", "events", "scheduler", "cgroupdriver", "deploy", "simtest", ".ci"}
	files := []string{"go.mod", "go.sum", "README.md", "test.sh"}
	ignored := gitignored(t, root)
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case slices.Contains(dirs, name):
			if !e.IsDir() {
				t.Errorf("%s at the repository root must be a directory", name)
			}
		case slices.Contains(files, name):
			if e.IsDir() {
				t.Errorf("%s at the repository root must be a file", name)
			}
		case strings.HasPrefix(name, "."), ignored(name):
		default:
			t.Errorf("%s at the repository root is not part of the layout (%s; files %s): "+
				"put it under one of those, or change the layout in the README and in this test",
				name, strings.Join(dirs, ", "), strings.Join(files, ", "))
		}
	}
}

// gitignored returns a matcher for the names the top-level .gitignore
// ignores at the root. Only simple patterns are understood; negations and
// patterns below the root are left out.
func gitignored(t *testing.T, root string) func(name string) bool {
	t.Helper()
	var patterns []string
	f, err := os.Open(filepath.Join(root, ".gitignore"))
	if errors.Is(err, os.ErrNotExist) {
		return func(string) bool { return false }
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "!") {
			continue
		}
		line = strings.TrimPrefix(strings.TrimSuffix(line, "/"), "/")
		if !strings.Contains(line, "/") {
			patterns = append(patterns, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return func(name string) bool {
		for _, p := range patterns {
			if ok, _ := filepath.Match(p, name); ok {
				return true
			}
		}
		return false
	}
}
