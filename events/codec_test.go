package events

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// goldenEvents holds one example of every type. Golden files written from it
// must stay decodable forever: when a type changes, add a new file, never
// edit an old one.
func goldenEvents() []Event {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	ev := func(i uint64, guest, node string, p Payload) Event {
		e := New(t0.Add(time.Duration(i)*time.Second), "cli:root", p)
		e.Index, e.Guest, e.Node = i, guest, node
		return e
	}
	return []Event{
		ev(1, "", "n1", &NodeRegistered{ID: "n1", Address: "10.0.0.1", CPUs: 8, MemoryBytes: 16 << 30, ReserveCPUs: 1, ReserveMemoryBytes: 1 << 30,
			Drivers: map[string]string{"process": "1"}, Labels: map[string]string{"rack": "a"}, CgroupMode: "v1", Controllers: []string{"cpu", "memory"}}),
		ev(2, "", "n1", &NodeUp{}),
		ev(3, "", "n1", &NodeDown{}),
		ev(4, "web", "", &GuestDefined{Name: "web", Driver: "process", MemoryBytes: 512 << 20, VCPUs: 2, CPUShares: 1024,
			Command: []string{"/bin/sleep", "1000"}, Labels: map[string]string{"app": "web"}}),
		ev(5, "web", "n1", &GuestPlaced{Node: "n1"}),
		ev(6, "web", "", &GuestStartRequested{}),
		ev(7, "web", "", &GuestStopRequested{}),
		ev(8, "web", "n1", &GuestStarted{Node: "n1", Generation: 5, PID: 4242, Cgroups: []string{"/sys/fs/cgroup/cpu/corral/process/web"}}),
		ev(9, "web", "n1", &GuestExited{Node: "n1", Generation: 5, Code: 137, Signal: "killed", OOMKilled: true}),
		ev(10, "web", "", &GuestUndefined{}),
		ev(11, "web", "", &GuestTuned{Knob: "cpu_shares", Old: "1024", New: "500", Live: true, Persistent: true}),
		ev(12, "", "", &ServerRegistered{ID: "s1", RaftAddr: "127.0.0.1:7000", HTTPAddr: "127.0.0.1:4646"}),
		ev(13, "", "n1", &NodeEligibility{Eligibility: Draining, Deadline: t0.Add(time.Hour), MaxParallel: 1}),
		ev(14, "", "", &SchedulerConfig{Algorithm: "spread", CPUOvercommit: 2, MemoryOvercommit: 1}),
		// Fields added later to existing types are covered by files of
		// their own, so the first encodings stay as they were written.
		ev(15, "db", "", &GuestDefined{Name: "db", Driver: "qemu", MemoryBytes: 1 << 30, VCPUs: 2, CPUShares: 1024, Kernel: "/k",
			Constraints: []string{"rack=a"}, SpreadBy: "app", CPUSet: "0-1", Labels: map[string]string{"app": "db"}}),
		ev(16, "db", "n1", &GuestPlaced{Node: "n1", CPUs: "0-1"}),
		ev(17, "", "n1", &NodeUsage{IntervalMs: 10000, Guests: []GuestUsage{{Guest: "web", Generation: 5, CPUNanos: 1e9, UserNanos: 7e8, SystemNanos: 3e8,
			MemoryBytes: 1 << 20, MemoryPeakBytes: 2 << 20, LimitHits: 3, Pids: 2}}}),
		ev(18, "web", "n1", &GuestLimitHit{Node: "n1", Generation: 5, LimitHits: 4, Delta: 1}),
		ev(19, "web", "n1", &GuestTuningApplied{Node: "n1", Generation: 5, Knob: "cpu_shares", Value: "500"}),
		ev(20, "web", "n1", &GuestDrift{Node: "n1", Generation: 5, Knob: "cpu_shares", Expected: "500", Found: "800", Corrected: true}),
		ev(21, "", "n1", &NodeCleanup{Removed: []string{"cgroup corral/process/old"}}),
		ev(23, "web", "", &GuestSuspendRequested{}),
		ev(24, "web", "", &GuestResumeRequested{}),
		ev(22, "", "n2", &NodeRegistered{ID: "n2", CPUs: 2, MemoryBytes: 4 << 30, SecretHash: "ab12", FenceTimeoutMs: 10000, HeartbeatMs: 1000}),
		ev(25, "", "", &ACLTokenCreated{Accessor: "0123456789abcdef0123456789abcdef", Name: "bootstrap", Policies: []string{"management"},
			SecretHash: "e8bc163c82eee18733288c7d4ac636db3a6deb013ef2d37b68322be20edc45cc", Bootstrap: true}),
		ev(26, "", "", &ACLTokenDeleted{Accessor: "0123456789abcdef0123456789abcdef"}),
		ev(27, "", "", &ACLPolicySet{Name: "deploy", Description: "CI deploys guests", Capabilities: []string{"guest:read", "guest:write"}}),
		ev(28, "", "", &ACLPolicyDeleted{Name: "deploy"}),
		ev(29, "", "n3", &NodeJoinTokenCreated{Accessor: "fedcba9876543210fedcba9876543210", Node: "n3",
			SecretHash: "ad328846aa18b32a335816374511cac1063c704b8c57999e51da9f908290a7a4", ExpiresAt: t0.Add(time.Hour)}),
		ev(30, "", "n3", &NodeEnrolled{Node: "n3", JoinToken: "fedcba9876543210fedcba9876543210", Fingerprint: "0011223344556677"}),
		ev(31, "web", "n1", &GuestTuningFailed{Node: "n1", Generation: 5, Knob: "hard_limit", Value: "unlimited",
			Error: "corral: apply hard_limit for process/web: write memory.limit_in_bytes: invalid argument"}),
		ev(32, "db", "n1", &GuestBalloon{Node: "n1", Generation: 16, Target: 64 << 20, Actual: 66 << 20, Usage: 201 << 20, Compliant: true}),
		ev(1201, "ct", "", &GuestDefined{Name: "ct", Driver: "lxc", MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024, Rootfs: "/srv/rootfs",
			CapAdd: []string{"CAP_NET_ADMIN"}, CapDrop: []string{"CAP_CHOWN"}}),
		ev(1202, "ct-userns", "", &GuestDefined{Name: "ct-userns", Driver: "lxc", MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024, Rootfs: "/srv/rootfs",
			IDMap: []IDRange{{Container: 0, Host: 100000, Count: 65536}}}),
		ev(33, "db", "n1", &GuestBalloonNoncompliant{Node: "n1", Generation: 16, Target: 64 << 20, Actual: 128 << 20, Usage: 230 << 20, WaitedMs: 30000}),
		ev(34, "", "", &PartitionSet{Name: "gold", Limits: map[string]string{"cpu_shares": "2048", "hard_limit": "1073741824",
			"global_quota": "200000", "global_period": "100000", "pids_max": "512"}}),
		ev(35, "", "", &PartitionDeleted{Name: "gold"}),
		ev(36, "", "n1", &NodeUsage{IntervalMs: 10000, Guests: []GuestUsage{}, Partitions: []PartitionApplied{
			{Name: "gold", Index: 34, Applied: map[string]string{"cpu_shares": "2048", "hard_limit": "1073741824"},
				Error: "corral: apply global_quota for partition gold: write cpu.cfs_quota_us: invalid argument"}}}),
		ev(134, "db", "n1", &GuestBalloonNoncompliant{Node: "n1", Generation: 16, Target: 64 << 20, Actual: 128 << 20, Usage: 230 << 20, WaitedMs: 30000,
			Enforced: true, Reclaimed: 40 << 20, UsageAfter: 190 << 20, ReclaimError: "write memory.limit_in_bytes: device or resource busy"}),
		ev(135, "", "", &SchedulerConfig{Algorithm: "binpack", CPUOvercommit: 1, MemoryOvercommit: 1, BalloonMemory: true}),
		// Restart policy (restart.go), numbered apart from the others.
		ev(1301, "job", "", &GuestDefined{Name: "job", Driver: "process", MemoryBytes: 16 << 20, VCPUs: 1, CPUShares: 1024,
			Command: []string{"/bin/false"}, Restart: &RestartPolicy{Mode: RestartOnFailure, Attempts: 2, IntervalMs: 300000,
				DelayMs: 1000, Backoff: 2, RescheduleAttempts: 1, RescheduleIntervalMs: 3600000, LimitHits: 50}}),
		ev(1302, "job", "n1", &GuestStarted{Node: "n1", Generation: 5, PID: 4243, Restart: 1}),
		ev(1303, "job", "n1", &GuestExited{Node: "n1", Generation: 5, Code: -1, Signal: "SIGKILL", OOMKilled: true, Restart: 1}),
		ev(1304, "job", "n1", &GuestRestarting{Node: "n1", Generation: 5, Attempt: 2, Of: 2, DelayMs: 2000, Reason: "OOM-killed"}),
		ev(1305, "job", "n1", &GuestRestartsExhausted{Node: "n1", Generation: 5, Attempts: 2, IntervalMs: 300000, Reason: "OOM-killed"}),
		// Migration (migration.go), numbered apart from the others.
		ev(4001, "vm", "n2", &GuestMigrationRequested{From: "n1", To: "n2", Generation: 5, CPUs: "1"}),
		ev(4002, "vm", "n2", &GuestMigrationTargetReady{Node: "n2", Generation: 4001, Address: "10.0.0.2:49152"}),
		ev(4003, "vm", "n1", &GuestMigrationProgress{Node: "n1", Generation: 5, Migration: 4001, Status: "completed",
			TransferredBytes: 140 << 20, TotalBytes: 136 << 20, DiskRemaining: 0, ElapsedMs: 4200, DowntimeMs: 38}),
		ev(4004, "vm", "n2", &GuestMigrationSwitched{Node: "n2", Generation: 4001, PID: 4321}),
		ev(4005, "vm", "n1", &GuestMigrated{Node: "n1", Generation: 5, Migration: 4001}),
		ev(4006, "vm", "n2", &GuestMigrationAborted{Node: "n2", Migration: 4001, Reason: "the target agent restarted before the switch"}),
		ev(4007, "job", "n2", &GuestMigrationRequested{From: "n1", To: "n2", Generation: 5, Offline: true}),
		ev(412, "vm", "", &GuestDefined{Name: "vm", Driver: "qemu", MemoryBytes: 128 << 20, VCPUs: 1, CPUShares: 1024, Kernel: "/k",
			Disks: []GuestDisk{{Image: "/srv/base.raw"}, {Image: "/srv/data.qcow2", Format: "qcow2", Cache: "none", SizeBytes: 1 << 30}}}),
		ev(1291, "ct", "", &GuestDefined{Name: "ct", Driver: "lxc", MemoryBytes: 64 << 20, VCPUs: 1, CPUShares: 1024, Rootfs: "/srv/rootfs", Network: NetworkBridge}),
		ev(1292, "ct", "n1", &GuestStarted{Node: "n1", Generation: 1291, PID: 4343, Addresses: []string{"10.87.0.2/24"}, MAC: "52:54:00:12:34:56", Interface: "cv0123456789ab"}),
		ev(1293, "", "n1", &NodeRegistered{ID: "n1", CPUs: 2, MemoryBytes: 4 << 30, SecretHash: "ab12", Bridge: "corral0", BridgeCIDR: "10.87.0.0/24"}),
	}
}

func TestGolden(t *testing.T) {
	seen := map[Type]bool{}
	for _, e := range goldenEvents() {
		seen[e.Type] = true
		name := e.Type.String()
		if e.Index == 15 || e.Index == 16 || e.Index == 22 || e.Index == 36 || e.Index >= 134 && e.Index <= 135 || e.Index == 412 || e.Index > 1200 {
			name += "." + strconv.FormatUint(e.Index, 10)
		}
		path := filepath.Join("testdata", "v1", name+".json")
		if *update {
			b, err := Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v (run go test ./events -update once to write it)", e.Type, err)
		}
		for name, dec := range map[string]func([]byte) (Event, error){"Unmarshal": Unmarshal, "Decode": Decode} {
			got, err := dec(b)
			if err != nil {
				t.Fatalf("%s: golden encoding no longer decodes with %s: %v", path, name, err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Errorf("%s: %s gives\n%#v\nwant\n%#v", path, name, got, e)
			}
		}
	}
	for _, typ := range Types() {
		if !seen[typ] {
			t.Errorf("type %s has no golden encoding; add it to goldenEvents", typ)
		}
	}
}

func TestUnmarshalRejects(t *testing.T) {
	cases := map[string]struct {
		in   string
		want error
	}{
		"unknown type":     {`{"index":1,"type":"guest.exploded","v":1,"payload":{}}`, ErrUnknownType},
		"numeric type":     {`{"index":1,"type":99,"v":1,"payload":{}}`, ErrUnknownType},
		"unknown field":    {`{"index":1,"type":"node.up","v":1,"payload":{},"extra":1}`, ErrMalformed},
		"payload field":    {`{"index":1,"type":"node.up","v":1,"payload":{"x":1}}`, ErrMalformed},
		"no payload":       {`{"index":1,"type":"node.up","v":1}`, ErrMalformed},
		"future version":   {`{"index":1,"type":"node.up","v":9,"payload":{}}`, ErrMalformed},
		"trailing":         {`{"index":1,"type":"node.up","v":1,"payload":{}} {}`, ErrMalformed},
		"not json":         {`hello`, ErrMalformed},
		"wrong value type": {`{"index":"x","type":"node.up","v":1,"payload":{}}`, ErrMalformed},
	}
	for name, c := range cases {
		_, err := Unmarshal([]byte(c.in))
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
}

func TestMarshalRejectsMismatch(t *testing.T) {
	e := New(time.Now(), "x", &NodeUp{})
	e.Type = TypeNodeDown
	if _, err := Marshal(e); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v", err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, e := range goldenEvents() {
		b, _ := Marshal(e)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Unmarshal(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode and decode to the same event.
		b2, err := Marshal(e)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
		if _, err := Unmarshal(b2); err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
	})
}

// TestTypeOf: the type is read from an event's envelope whatever its
// payload, and an update without a readable event has none.
func TestTypeOf(t *testing.T) {
	usage := New(time.Now(), "node/n1", &NodeUsage{IntervalMs: 1000, Guests: []GuestUsage{{Guest: "web", Generation: 3}}})
	raw, err := Marshal(usage)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		raw  string
		want Type
	}{
		{string(raw), TypeNodeUsage},
		{`{"index":3,"payload":{"x":[1,2,{"type":"no"}]},"type":"node.down"}`, TypeNodeDown},
		{`{"index":3}`, 0},
		{``, 0},
		{`[1]`, 0},
		{`{"index":`, 0},
	} {
		if got := TypeOf([]byte(tc.raw)); got != tc.want {
			t.Errorf("TypeOf(%s) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}
