package main

import (
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
)

// TestReadmeGuestExamplesFitAtOnce runs every `corral guest create`
// example of the README, as written, against one node the size of this
// host (corral dev --no-agent: guests are placed, not run, so the
// example paths need not exist): each is accepted, and all are placed at
// once with the defaults, none left pending for want of room.
func TestReadmeGuestExamplesFitAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var examples [][]string
	lines := strings.Split(string(readme), "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "corral guest create ") {
			continue
		}
		for strings.HasSuffix(l, "\\") && i+1 < len(lines) {
			i++
			l = strings.TrimSuffix(l, "\\") + " " + strings.TrimSpace(lines[i])
		}
		if j := strings.Index(l, " #"); j > 0 {
			l = l[:j]
		}
		args, err := splitCommand(l)
		if err != nil {
			t.Fatalf("README example %q does not parse: %v", l, err)
		}
		examples = append(examples, args[1:])
	}
	if len(examples) < 5 {
		t.Fatalf("found %d guest create examples in the README; the test looks for lines starting with `corral guest create`", len(examples))
	}
	p := startDev(t, t.TempDir())
	seen := map[string]bool{}
	for _, args := range examples {
		name := args[2]
		if seen[name] {
			continue // one example per name: the README may show a guest twice
		}
		seen[name] = true
		if r := p.corral(args...); r.code != 0 {
			t.Errorf("README example `corral %s`: exit %d, %s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	// The scheduler places what a create could not at once on its next
	// pass: wait for every guest asked to run to have a node.
	var guests []api.GuestView
	deadline := time.Now().Add(waitTimeout)
	for {
		if err := json.Unmarshal([]byte(p.ok("guest", "list", "-o", "json")), &guests); err != nil {
			t.Fatal(err)
		}
		waiting := 0
		for _, g := range guests {
			if g.Desired == api.DesiredRunning && g.Node == "" {
				waiting++
			}
		}
		if waiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, g := range guests {
				if g.Desired == api.DesiredRunning && g.Node == "" {
					t.Errorf("README example guest %s stays %s with the defaults:\n%s", g.Name, g.Status, p.ok("guest", "show", g.Name))
				}
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d README guest examples placed at once on a %d-CPU node", len(guests), runtime.NumCPU())
}
