package cgroupdriver

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Stats is what the kernel counted for one guest. Counters of controllers
// the host lacks stay zero.
type Stats struct {
	CPU    CPUStats    `json:"cpu"`
	Memory MemoryStats `json:"memory"`
	// LimitHits counts how often the guest ran into its memory limits: on
	// v1 memory.failcnt plus memory.memsw.failcnt, on v2 the "max" event of
	// memory.events. The raw values are in Memory.
	LimitHits uint64    `json:"limit_hits"`
	Pids      PidsStats `json:"pids"`
	IO        IOStats   `json:"io"`
}

// CPUStats is CPU time in nanoseconds.
type CPUStats struct {
	TotalNs  uint64 `json:"total_ns"`
	UserNs   uint64 `json:"user_ns"`
	SystemNs uint64 `json:"system_ns"`
	// PerCPUNs is the total per CPU (cgroup v1 cpuacct only).
	PerCPUNs []uint64 `json:"per_cpu_ns,omitempty"`
}

// MemoryStats are bytes and raw limit counters.
type MemoryStats struct {
	Usage uint64 `json:"usage"`
	Peak  uint64 `json:"peak"`
	// Failcnt and SwapFailcnt are v1 memory.failcnt and memory.memsw.failcnt.
	Failcnt     uint64 `json:"failcnt,omitempty"`
	SwapFailcnt uint64 `json:"swap_failcnt,omitempty"`
	// Events are v2 memory.events; on v1 only OOMKill is filled, from
	// memory.oom_control.
	Events MemoryEvents `json:"events"`
}

// MemoryEvents mirrors cgroup v2 memory.events.
type MemoryEvents struct {
	Low     uint64 `json:"low,omitempty"`
	High    uint64 `json:"high,omitempty"`
	Max     uint64 `json:"max,omitempty"`
	OOM     uint64 `json:"oom,omitempty"`
	OOMKill uint64 `json:"oom_kill,omitempty"`
}

// PidsStats counts tasks.
type PidsStats struct {
	Current uint64 `json:"current"`
}

// IOStats sums block I/O over all devices.
type IOStats struct {
	ReadBytes  uint64 `json:"read_bytes"`
	WriteBytes uint64 `json:"write_bytes"`
	ReadOps    uint64 `json:"read_ops"`
	WriteOps   uint64 `json:"write_ops"`
}

// Stats reads the guest's counters. It costs about ten small file reads,
// one pread each on descriptors the driver keeps open between calls
// (counterfiles.go).
func (d *Driver) Stats(g Guest) (Stats, error) { return d.stats(g, true) }

// Usage is Stats without the block I/O counters (IO stays zero): the
// agent's periodic usage pass reports CPU, memory, limit hits and tasks
// only, and blkio's two files, which the kernel formats per device and
// operation, were a fifth of that pass's reads.
func (d *Driver) Usage(g Guest) (Stats, error) { return d.stats(g, false) }

func (d *Driver) stats(g Guest, withIO bool) (Stats, error) {
	if err := g.Validate(); err != nil {
		return Stats{}, err
	}
	var (
		st  Stats
		err error
	)
	wrap := func(e error) (Stats, error) { return Stats{}, fmt.Errorf("corral: stats of %s: %w", g, e) }
	if i, v := d.l.at(cCPUAcct); i >= 0 {
		if st.CPU, err = readCPU(d.files.read, d.l.guestDir(i, g), v); err != nil {
			return wrap(err)
		}
	}
	if i, v := d.l.at(cMemory); i >= 0 {
		if st.Memory, err = readMemory(d.files.read, d.l.guestDir(i, g), v, d.host.SwapAccounting); err != nil {
			return wrap(err)
		}
		if v == 1 {
			st.LimitHits = st.Memory.Failcnt + st.Memory.SwapFailcnt
		} else {
			st.LimitHits = st.Memory.Events.Max
		}
	}
	if i, _ := d.l.at(cPids); i >= 0 {
		if st.Pids.Current, err = readUintWith(d.files.read, d.l.guestDir(i, g)+"/pids.current"); err != nil {
			return wrap(err)
		}
	}
	if i, v := d.l.at(cBlkio); i >= 0 && withIO {
		if st.IO, err = readIO(d.files.read, d.l.guestDir(i, g), v); err != nil {
			return wrap(err)
		}
	}
	return st, nil
}

func readCPU(rd reader, dir string, version int) (CPUStats, error) {
	var c CPUStats
	if version == 2 {
		err := readKeyedWith(rd, dir+"/cpu.stat", func(k string, v uint64) {
			switch k {
			case "usage_usec":
				c.TotalNs = v * 1000
			case "user_usec":
				c.UserNs = v * 1000
			case "system_usec":
				c.SystemNs = v * 1000
			}
		})
		return c, err
	}
	// cpuacct.usage_all has user and system time per CPU in one read:
	// "cpu user system" then one line per CPU.
	s, err := rd(dir + "/cpuacct.usage_all")
	if err == nil {
		for i, line := range strings.Split(s, "\n") {
			f := strings.Fields(line)
			if i == 0 || len(f) != 3 {
				continue
			}
			u, _ := strconv.ParseUint(f[1], 10, 64)
			sys, _ := strconv.ParseUint(f[2], 10, 64)
			c.UserNs += u
			c.SystemNs += sys
			c.PerCPUNs = append(c.PerCPUNs, u+sys)
		}
		c.TotalNs = c.UserNs + c.SystemNs
		return c, nil
	}
	if !isErrno(err, unix.ENOENT) {
		return c, err
	}
	// Older kernels: total and per CPU in ns, user and system in USER_HZ
	// ticks, which Linux fixes at 100 per second in this file.
	if c.TotalNs, err = readUintWith(rd, dir+"/cpuacct.usage"); err != nil {
		return c, err
	}
	if s, err = rd(dir + "/cpuacct.usage_percpu"); err != nil {
		return c, err
	}
	for _, f := range strings.Fields(s) {
		v, _ := strconv.ParseUint(f, 10, 64)
		c.PerCPUNs = append(c.PerCPUNs, v)
	}
	err = readKeyedWith(rd, dir+"/cpuacct.stat", func(k string, v uint64) {
		switch k {
		case "user":
			c.UserNs = v * 1e7
		case "system":
			c.SystemNs = v * 1e7
		}
	})
	return c, err
}

func readMemory(rd reader, dir string, version int, swap bool) (MemoryStats, error) {
	var m MemoryStats
	var err error
	if version == 2 {
		if m.Usage, err = readUintWith(rd, dir+"/memory.current"); err != nil {
			return m, err
		}
		// memory.peak appeared in Linux 5.19.
		if m.Peak, err = readUintWith(rd, dir+"/memory.peak"); err != nil && !isErrno(err, unix.ENOENT) {
			return m, err
		}
		err = readKeyedWith(rd, dir+"/memory.events", func(k string, v uint64) {
			switch k {
			case "low":
				m.Events.Low = v
			case "high":
				m.Events.High = v
			case "max":
				m.Events.Max = v
			case "oom":
				m.Events.OOM = v
			case "oom_kill":
				m.Events.OOMKill = v
			}
		})
		return m, err
	}
	if m.Usage, err = readUintWith(rd, dir+"/memory.usage_in_bytes"); err != nil {
		return m, err
	}
	if m.Peak, err = readUintWith(rd, dir+"/memory.max_usage_in_bytes"); err != nil {
		return m, err
	}
	if m.Failcnt, err = readUintWith(rd, dir+"/memory.failcnt"); err != nil {
		return m, err
	}
	if swap {
		if m.SwapFailcnt, err = readUintWith(rd, dir+"/memory.memsw.failcnt"); err != nil {
			return m, err
		}
	}
	err = readKeyedWith(rd, dir+"/memory.oom_control", func(k string, v uint64) {
		if k == "oom_kill" {
			m.Events.OOMKill = v
		}
	})
	return m, err
}

func readIO(rd reader, dir string, version int) (IOStats, error) {
	var io IOStats
	if version == 2 {
		s, err := rd(dir + "/io.stat")
		if err != nil {
			return io, err
		}
		// "254:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0"
		for _, f := range strings.Fields(s) {
			k, val, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			v, _ := strconv.ParseUint(val, 10, 64)
			switch k {
			case "rbytes":
				io.ReadBytes += v
			case "wbytes":
				io.WriteBytes += v
			case "rios":
				io.ReadOps += v
			case "wios":
				io.WriteOps += v
			}
		}
		return io, nil
	}
	// "254:0 Read 4096" ... "Total 8192"
	sum := func(file string, r, w *uint64) error {
		s, err := rd(dir + "/" + file)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(s, "\n") {
			f := strings.Fields(line)
			if len(f) != 3 {
				continue
			}
			v, _ := strconv.ParseUint(f[2], 10, 64)
			switch f[1] {
			case "Read":
				*r += v
			case "Write":
				*w += v
			}
		}
		return nil
	}
	if err := sum("blkio.throttle.io_service_bytes_recursive", &io.ReadBytes, &io.WriteBytes); err != nil {
		return io, err
	}
	err := sum("blkio.throttle.io_serviced_recursive", &io.ReadOps, &io.WriteOps)
	return io, err
}

// reader returns a cgroup file's content as readFile does.
type reader func(path string) (string, error)

// readKeyed parses a flat keyed file ("key value" per line).
func readKeyed(path string, f func(key string, v uint64)) error {
	return readKeyedWith(readFile, path, f)
}

func readKeyedWith(rd reader, path string, f func(key string, v uint64)) error {
	s, err := rd(path)
	if err != nil {
		return err
	}
	for len(s) > 0 {
		var line string
		line, s, _ = strings.Cut(s, "\n")
		k, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
		if err != nil {
			continue
		}
		f(k, v)
	}
	return nil
}
