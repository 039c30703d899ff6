package main

import (
	"strings"
	"testing"
)

// TestPrintAlignedColons checks that get-config's rows keep their colons in
// one column whatever the longest name (memory_overcommit is 17 wide).
func TestPrintAlignedColons(t *testing.T) {
	var b strings.Builder
	rows := [][2]string{{"algorithm", "binpack"}, {"cpu_overcommit", "4"}, {"memory_overcommit", "1"}, {"balloon_memory", "false"}}
	if err := printAligned(&b, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != len(rows) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(rows), b.String())
	}
	col := strings.Index(lines[0], ": ")
	for i, l := range lines {
		if got := strings.Index(l, ": "); got != col || col != len("memory_overcommit") {
			t.Errorf("line %d %q: colon at %d, want %d (the longest name's width)", i, l, got, len("memory_overcommit"))
		}
		if !strings.HasPrefix(l, rows[i][0]) || !strings.HasSuffix(l, ": "+rows[i][1]) {
			t.Errorf("line %d %q does not show %s = %s", i, l, rows[i][0], rows[i][1])
		}
	}
	b.Reset()
	if err := printAligned(&b, [][2]string{{"a", "1"}}); err != nil {
		t.Fatal(err)
	}
	if b.String() != "a              : 1\n" {
		t.Errorf("short names keep virsh's 15 columns: %q", b.String())
	}
}
