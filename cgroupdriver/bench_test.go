package cgroupdriver_test

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

// benchResources is what the benchmark configures per guest: shares, a
// memory limit, a cpuset and the default device ACL.
func benchResources(d *cgroupdriver.Driver) cgroupdriver.Resources {
	return cgroupdriver.Resources{
		CPUShares:       new(uint64(512)),
		MemoryHardLimit: new(int64(256 << 20)),
		CpusetCPUs:      "0",
		CpusetMems:      "0",
		Devices:         d.DefaultDevices(),
	}
}

// BenchmarkGuestLifecycle creates, configures and destroys one guest group
// per iteration on the real host, through the driver and, as the reference,
// as the same mkdir/write/rmdir sequence done with plain file writes.
func BenchmarkGuestLifecycle(b *testing.B) {
	rep := cgrouptest.RequireHost(b)
	d := hostDriverFor(b, rep)
	res := benchResources(d)
	warm := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "warm"}
	if err := d.Create(warm); err != nil { // sets up the tree once
		b.Fatal(err)
	}
	ws, err := d.Plan(warm, res)
	if err != nil {
		b.Fatal(err)
	}
	if err := d.Remove(b.Context(), warm); err != nil {
		b.Fatal(err)
	}
	var driverNs, plainNs, rawNs float64
	b.Run("driver", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			g := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "d" + strconv.Itoa(i)}
			if err := d.Create(g); err != nil {
				b.Fatal(err)
			}
			if _, err := d.Apply(g, res); err != nil {
				b.Fatal(err)
			}
			if err := d.Remove(b.Context(), g); err != nil {
				b.Fatal(err)
			}
		}
		driverNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	// The reference: the directories and writes the driver's plan names,
	// with os.Mkdir, os.WriteFile and os.Remove.
	warmDirs, _ := d.Paths(warm)
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			id := "p" + strconv.Itoa(i)
			dirs := make([]string, len(warmDirs))
			for j, w := range warmDirs {
				dirs[j] = w[:len(w)-len("warm")] + id
				if err := os.Mkdir(dirs[j], 0o755); err != nil {
					b.Fatal(err)
				}
			}
			for _, w := range ws {
				p := w.Dir[:len(w.Dir)-len("warm")] + id + "/" + w.File
				if err := os.WriteFile(p, []byte(w.Value), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			for _, dir := range dirs {
				if err := os.Remove(dir); err != nil {
					b.Fatal(err)
				}
			}
		}
		plainNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	// The floor: the same sequence in bare system calls (os.WriteFile adds
	// O_CREAT|O_TRUNC and an fstat to every write).
	b.Run("syscalls", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 64)
		for i := range b.N {
			id := "s" + strconv.Itoa(i)
			for _, w := range warmDirs {
				if err := unix.Mkdir(w[:len(w)-len("warm")]+id, 0o755); err != nil {
					b.Fatal(err)
				}
			}
			for _, w := range ws {
				fd, err := unix.Open(w.Dir[:len(w.Dir)-len("warm")]+id+"/"+w.File, unix.O_WRONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				buf = append(buf[:0], w.Value...)
				_, err = unix.Write(fd, buf)
				unix.Close(fd)
				if err != nil {
					b.Fatal(err)
				}
			}
			for _, w := range warmDirs {
				if err := unix.Rmdir(w[:len(w)-len("warm")] + id); err != nil {
					b.Fatal(err)
				}
			}
		}
		rawNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	if plainNs > 0 && rawNs > 0 {
		b.Logf("per guest (%d hierarchies, %d writes): driver %.0f ns, plain file writes %.0f ns (ratio %.2f), bare syscalls %.0f ns (ratio %.2f)",
			len(warmDirs), len(ws), driverNs, plainNs, driverNs/plainNs, rawNs, driverNs/rawNs)
	}
}

// BenchmarkStats measures one Stats call per guest, the agent's sampling
// cost (multiply by the number of guests per interval).
func BenchmarkStats(b *testing.B) {
	rep := cgrouptest.RequireHost(b)
	d := hostDriverFor(b, rep)
	g := cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: "stats"}
	if err := d.Create(g); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Remove(b.Context(), g) })
	b.Run("driver", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := d.Stats(g); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "ms/1000guests")
	})
	// The reference: reading the same files with os.ReadFile, unparsed.
	files := statsFiles(d, g)
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, f := range files {
				if _, err := os.ReadFile(f); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(len(files)), "files")
	})
}

// statsFiles lists the files Stats reads on this host's layout.
func statsFiles(d *cgroupdriver.Driver, g cgroupdriver.Guest) []string {
	paths, _ := d.Paths(g)
	var out []string
	for _, name := range []string{"cpuacct.usage_all", "cpu.stat", "memory.usage_in_bytes", "memory.max_usage_in_bytes",
		"memory.failcnt", "memory.memsw.failcnt", "memory.oom_control", "memory.current", "memory.peak", "memory.events",
		"pids.current", "blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive", "io.stat"} {
		if name == "cpu.stat" && d.Report().Mode != cgroupdriver.ModeV2 {
			continue // where cpuacct is mounted, Stats reads it instead
		}
		for _, p := range paths {
			if _, err := os.Stat(p + "/" + name); err == nil {
				out = append(out, p+"/"+name)
				break
			}
		}
	}
	return out
}
