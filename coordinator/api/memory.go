package api

import (
	"strconv"

	"github.com/corral-dev/corral/events"
)

// A guest's memory, as virsh dominfo has it: its maximum memory (knob
// max_memory, virsh setmaxmem; the definition's --memory until tuned) and
// its current memory (knob memory, the balloon target, virsh setmem). The
// maximum is a qemu guest's RAM and the base of every guest's hard limit.

// MaxMemory returns g's maximum memory in force: the running instance's,
// which for a guest not running is what its next start uses.
// It is knobBytes(g.Knob("max_memory")) without the detour through text:
// the scheduler's view of a node asks it of every guest there.
func (g *Guest) MaxMemory() int64 {
	if v, ok := g.LiveTuning["max_memory"]; ok {
		return knobBytes(v)
	}
	return g.ConfigMaxMemory()
}

// ConfigMaxMemory returns the maximum memory g's next start uses:
// knobBytes(g.ConfigKnob("max_memory")).
func (g *Guest) ConfigMaxMemory() int64 {
	if v, ok := g.Tuning["max_memory"]; ok {
		return knobBytes(v)
	}
	return g.definedMaxMemory()
}

// BalloonTarget returns g's balloon target in force, 0 when it has none
// (it holds all of its maximum memory).
func (g *Guest) BalloonTarget() int64 { return knobBytes(g.Knob("memory")) }

// PlacementMemory is the memory the scheduler counts for g: its maximum
// memory, or with balloon set (the scheduler's balloon_memory option) its
// balloon target where it has one. It is the larger of what the running
// instance may hold and what the next start may hold, so a --config
// change waiting for a restart is already counted.
func (g *Guest) PlacementMemory(balloon bool) int64 {
	mem := func(target string, maxMem int64) int64 {
		if t := knobBytes(target); balloon && t > 0 && t < maxMem {
			return t
		}
		return maxMem
	}
	return max(mem(g.Knob("memory"), g.MaxMemory()), mem(g.ConfigKnob("memory"), g.ConfigMaxMemory()))
}

// definedMaxMemory is the maximum memory g's definition gives: its
// memory, for qemu the default RAM when it sets none.
func (g *Guest) definedMaxMemory() int64 {
	if g.MemoryBytes <= 0 && g.Driver == events.DriverQEMU {
		return events.DefaultQEMUMemory
	}
	return g.MemoryBytes
}

// defaultHardLimit is the hard limit of a guest with maximum memory
// maxMem (canonical text) and no hard_limit tuning: the maximum, for a VM
// with room for QEMU itself.
func (g *Guest) defaultHardLimit(maxMem string) string {
	n := knobBytes(maxMem)
	if g.Driver == events.DriverQEMU {
		n = events.QEMUMemoryLimit(n)
	}
	return strconv.FormatInt(n, 10)
}

// knobBytes reads a canonical size knob; "" (unset) is 0.
func knobBytes(v string) int64 {
	if v == "" {
		return 0 // without the error ParseInt would allocate
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}
