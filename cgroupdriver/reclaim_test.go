package cgroupdriver_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// TestReclaimV2 runs the v2 stick against a fake cgroupfs: the amount
// above the size is what is written to memory.reclaim; a group already
// within the size is left alone; a kernel without memory.reclaim (before
// 5.19) is ErrNoReclaim.
func TestReclaimV2(t *testing.T) {
	var l cgrouptest.Layout
	for _, x := range cgrouptest.Layouts() {
		if x.Name == "v2" {
			l = x
		}
	}
	d, _ := fakeDriver(t, l)
	g := cgroupdriver.Guest{Kind: cgroupdriver.KindQEMU, ID: "vm"}
	paths, err := d.Paths(g)
	if err != nil {
		t.Fatal(err)
	}
	dir := paths[0]
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(name, v string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("memory.current", "209715200\n")
	if _, err := d.Reclaim(g, 64<<20); !errors.Is(err, cgroupdriver.ErrNoReclaim) {
		t.Errorf("without memory.reclaim: %v, want ErrNoReclaim", err)
	}
	put("memory.reclaim", "")
	r, err := d.Reclaim(g, 64<<20)
	if err != nil || r.Err != nil {
		t.Fatalf("Reclaim: %+v, %v", r, err)
	}
	if got := readHost(t, filepath.Join(dir, "memory.reclaim")); got != "142606336" {
		t.Errorf("memory.reclaim got %q, want the 136 MiB above the size", got)
	}
	put("memory.reclaim", "")
	if r, err := d.Reclaim(g, 256<<20); err != nil || r.Before != 200<<20 || r.Freed() != 0 {
		t.Errorf("a group within the size: %+v, %v", r, err)
	}
	if got := readHost(t, filepath.Join(dir, "memory.reclaim")); got != "" {
		t.Errorf("a group within the size was pressed: memory.reclaim %q", got)
	}
	if _, err := d.Reclaim(g, 0); err == nil {
		t.Error("a size of 0 was taken")
	}
}
