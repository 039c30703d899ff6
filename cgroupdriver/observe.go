package cgroupdriver

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Observation is one managed knob as found on the host.
type Observation struct {
	Knob string `json:"knob"`
	Dir  string `json:"dir"`
	File string `json:"file"`
	// Want is what [Driver.Apply] writes for the knob; Got is what the
	// kernel shows now (for per-device files: the device's line).
	Want string `json:"want"`
	Got  string `json:"got"`
	// Drift is true when Got does not express Want (taking into account the
	// kernel's own rounding, such as memory limits to whole pages).
	Drift bool `json:"drift"`
}

// Observe reads back every knob r manages for g and says which ones drifted,
// say because someone wrote cpu.shares by hand. Repair is [Driver.Apply]
// with the same r.
func (d *Driver) Observe(g Guest, r Resources) ([]Observation, error) {
	ws, err := d.Plan(g, r)
	if err != nil {
		return nil, err
	}
	return observeWrites(ws, d.host.PageSize, g.String(), d.files.read) // the guest's own descriptors, as Stats
}

// observeWrites reads back the files a plan writes with rd; what names the
// group in errors.
func observeWrites(ws []Write, page int64, what string, rd reader) ([]Observation, error) {
	if page <= 0 {
		page = 4096
	}
	var (
		out     []Observation
		devices *Observation
		last    = map[string]int{} // path -> index in out, for files written twice
	)
	for _, w := range ws {
		switch {
		case w.File == "devices.deny" || w.File == "devices.allow":
			if devices == nil {
				out = append(out, Observation{Knob: w.Knob, Dir: w.Dir, File: "devices.list"})
				devices = &out[len(out)-1]
			}
			if w.File == "devices.allow" {
				devices.Want = joinRules(devices.Want, w.Value)
			}
			continue
		case perDevice(w.File) || strings.HasPrefix(w.Knob, "device_"):
			// One line per device: each write is observed on its own.
			out = append(out, Observation{Knob: w.Knob, Dir: w.Dir, File: w.File, Want: w.Value})
			continue
		}
		if i, ok := last[w.Path()]; ok {
			out[i].Want = w.Value
			continue
		}
		last[w.Path()] = len(out)
		out = append(out, Observation{Knob: w.Knob, Dir: w.Dir, File: w.File, Want: w.Value})
	}
	for i := range out {
		o := &out[i]
		if err := observe(o, page, rd); err != nil {
			return nil, fmt.Errorf("corral: observe %s of %s: %w", o.Knob, what, err)
		}
	}
	return out, nil
}

func joinRules(list, rule string) string {
	if list == "" {
		return rule
	}
	return list + "; " + rule
}

func perDevice(file string) bool {
	return file == "io.max" || strings.HasPrefix(file, "blkio.throttle.")
}

// observe reads o's file and decides whether it drifted from o.Want.
func observe(o *Observation, page int64, rd reader) error {
	if o.File == DeviceProgramFile {
		got, drift, err := observeDeviceProgram(o.Dir, o.Want)
		o.Got, o.Drift = got, drift
		return err
	}
	if o.File == MemPolicyFile {
		// A process's memory policy is its own, fixed at launch; there
		// is no file of the group to read it back from.
		o.Got = o.Want
		return nil
	}
	got, err := rd(o.Dir + "/" + o.File)
	if err != nil {
		return err
	}
	switch {
	case o.File == "devices.list":
		o.Got = strings.Join(strings.Split(got, "\n"), "; ")
		o.Drift = !sameRules(o.Want, o.Got)
	case perDevice(o.File) || strings.HasPrefix(o.Knob, "device_"):
		dev, _, _ := strings.Cut(o.Want, " ")
		o.Got = ""
		for _, line := range strings.Split(got, "\n") {
			if strings.HasPrefix(line, dev+" ") {
				o.Got = line
			}
		}
		if strings.HasPrefix(o.Knob, "device_") {
			o.Drift = !SameDeviceLine(o.Want, o.Got)
			break
		}
		want := o.Want
		if strings.HasSuffix(want, " 0") || strings.HasSuffix(want, "rbps=max wbps=max riops=max wiops=max") {
			want = "" // no limit shows as no line
		}
		o.Drift = o.Got != want
	case strings.HasPrefix(o.File, "cpuset."):
		o.Got = got
		a, _ := parseCPUSet(o.Want)
		b, err := parseCPUSet(got)
		o.Drift = err != nil || a.String() != b.String()
	case strings.HasPrefix(o.File, "memory."):
		o.Got = got
		o.Drift = !sameBytes(o.Want, got, page)
	case o.File == "cpu.max" && !strings.Contains(o.Want, " "):
		// Only the quota is managed; the period is whatever it is.
		o.Got = got
		q, _, _ := strings.Cut(got, " ")
		o.Drift = q != o.Want
	case strings.HasSuffix(o.File, "weight") && strings.HasPrefix(o.File, "io."):
		o.Got, _, _ = strings.Cut(got, "\n")
		o.Drift = o.Got != o.Want
	default:
		o.Got = got
		o.Drift = got != o.Want
	}
	return nil
}

// sameBytes compares a written memory limit with the value the kernel shows,
// which is rounded down to whole pages, and which for "unlimited" is a huge
// number (v1) or "max" (v2).
func sameBytes(want, got string, page int64) bool {
	if want == got {
		return true
	}
	g, err := strconv.ParseInt(got, 10, 64)
	if err != nil {
		return false
	}
	if want == "-1" || want == "max" {
		return g >= 1<<62
	}
	w, err := strconv.ParseInt(want, 10, 64)
	if err != nil {
		return false
	}
	return g == w/page*page
}

// sameRules compares two "; "-separated device rule lists as sets.
func sameRules(a, b string) bool {
	norm := func(s string) []string {
		var out []string
		for _, r := range strings.Split(s, "; ") {
			if r = strings.TrimSpace(r); r != "" {
				out = append(out, r)
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.Equal(norm(a), norm(b))
}
