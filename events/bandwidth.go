package events

import (
	"strconv"
	"strings"
)

// domiftune's knobs, in virsh's units: averages and peaks in KiB/s,
// bursts in KiB, 0 (the default) for none. The guest's node shapes
// outbound traffic (HTB) and polices inbound traffic (nftables) on the
// interfaces its agent was told to shape.

// BandwidthKnobs lists the bandwidth knobs in virsh's order.
var BandwidthKnobs = []string{"inbound_average", "inbound_peak", "inbound_burst", "outbound_average", "outbound_peak", "outbound_burst"}

// MaxBandwidth bounds a bandwidth value (KiB/s or KiB): 4 TiB/s.
const MaxBandwidth = 1 << 32

// IsBandwidthKnob reports whether knob is one of domiftune's.
func IsBandwidthKnob(knob string) bool {
	return strings.HasPrefix(knob, "inbound_") || strings.HasPrefix(knob, "outbound_")
}

func bandwidthKnob(name, help string) Knob {
	return Knob{Name: name, Default: "0", Help: help, parse: intRange(name, 0, MaxBandwidth)}
}

// Bandwidth reads a direction ("inbound" or "outbound") of a guest's
// bandwidth from its knobs.
func Bandwidth(knob func(string) string, dir string) (average, peak, burst uint64) {
	n := func(k string) uint64 { v, _ := strconv.ParseUint(knob(dir+"_"+k), 10, 64); return v }
	return n("average"), n("peak"), n("burst")
}
