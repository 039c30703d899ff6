package shaper

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

func TestInterfacePlan(t *testing.T) {
	got := fmt.Sprint(InterfacePlan("cv1", false, Rate{Average: 1024, Peak: 2048, Burst: 64}))
	want := "[[qdisc replace dev cv1 root handle 1: htb default 1] [class replace dev cv1 parent 1: classid 1:1 htb rate 8388608bit ceil 16777216bit burst 65536]]"
	if got != want {
		t.Errorf("fresh:\n%s\nwant\n%s", got, want)
	}
	if got := InterfacePlan("cv1", true, Rate{Average: 10}); len(got) != 1 || got[0][0] != "class" {
		t.Errorf("shaped already: %v, want only the class changed", got)
	}
	if got := fmt.Sprint(InterfacePlan("cv1", true, Rate{})); got != "[[qdisc del dev cv1 root handle 1:]]" {
		t.Errorf("no limit: %v", got)
	}
	if got := InterfacePlan("cv1", false, Rate{}); got != nil {
		t.Errorf("no limit, unshaped: %v", got)
	}
}

// TestShapeInterfaceRate shapes the egress of one end of a veth pair, as
// the agent shapes a guest's host-side veth or tap (the guest's inbound),
// to 1 MiB/s and measures a transfer through it against one unshaped.
func TestShapeInterfaceRate(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	run := p.runner(p.a)
	const limit = 1024 // KiB/s
	port := 21000
	next := func(addr string) string { port++; return fmt.Sprintf("%s:%d", addr, port) }
	free, _ := transfer(t, p.a, "", p.b, "", next(p.addrB), 32<<20)
	if err := ShapeInterface(ctx, run, p.devA, Rate{Average: limit, Burst: 32}); err != nil {
		t.Fatal(err)
	}
	if err := ShapeInterface(ctx, run, p.devA, Rate{Average: limit, Burst: 32}); err != nil {
		t.Fatalf("shaping again: %v", err)
	}
	shaped, _ := transfer(t, p.a, "", p.b, "", next(p.addrB), 3<<20)
	const kib = 1024.0
	t.Logf("guest inbound (host-side interface egress): unshaped %.0f KiB/s, shaped to %d KiB/s: %.0f KiB/s", free/kib, limit, shaped/kib)
	if shaped < 0.75*limit*kib || shaped > 1.25*limit*kib {
		t.Errorf("shaped rate %.0f KiB/s, want %d KiB/s ±25%%", shaped/kib, limit)
	}
	if free < 5*shaped {
		t.Errorf("unshaped %.0f KiB/s is not 5× the shaped %.0f KiB/s", free/kib, shaped/kib)
	}
	if err := ShapeInterface(ctx, run, p.devA, Rate{}); err != nil {
		t.Fatal(err)
	}
	if q, err := run.Run(ctx, "", "tc", "qdisc", "show", "dev", p.devA, "root"); err != nil || strings.Contains(q, "htb") {
		t.Errorf("after removing the limit: %q, %v", q, err)
	}
}
