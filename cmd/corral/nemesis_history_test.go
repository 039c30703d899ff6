package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
)

// nemOp is one client operation as the client saw it.
type nemOp struct {
	client  int
	create  bool // else a read
	name    string
	server  string
	call    time.Duration // since the history began
	ret     time.Duration // math.MaxInt64 when the outcome is unknown
	exists  bool          // create: acknowledged (or "already exists"); read: found
	unknown bool          // create: no answer, it may or may not have happened
	index   uint64
	err     string
}

// history records the operations of every client.
type history struct {
	start  time.Time
	mu     sync.Mutex
	ops    []nemOp
	failed int
	names  []string // every name a create was invoked for
	// maxNames bounds the creates.
	maxNames int
}

func (h *history) now() time.Duration { return time.Since(h.start) }

func (h *history) add(op nemOp) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

func (h *history) readFailed() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failed++
}

func (h *history) failedReads() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed
}

// reserve adds name to the names a create was invoked for, unless the
// budget of creates is spent.
func (h *history) reserve(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.names) >= h.maxNames {
		return false
	}
	h.names = append(h.names, name)
	return true
}

func (h *history) randomName(rng *rand.Rand) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.names) == 0 {
		return ""
	}
	return h.names[rng.IntN(len(h.names))]
}

func (h *history) allNames() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.names)
}

func (h *history) snapshot() []nemOp {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ops)
}

// runNemesisClient creates guests with unique names through random
// servers, each read back at once through another random server, and in
// between reads random names (created, being created or not yet acked by
// anyone) through random servers, until ctx ends.
func runNemesisClient(ctx context.Context, c *nemesisCluster, h *history, id int, rng *rand.Rand) {
	tick := time.NewTicker(nemesisReadGap)
	defer tick.Stop()
	seq := 0
	var lastCreate time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		name := fmt.Sprintf("nm-c%d-%d", id, seq+1)
		if time.Since(lastCreate) >= nemesisCreateGap && h.reserve(name) {
			lastCreate = time.Now()
			seq++
			op := nemCreate(ctx, c, h, id, name, c.servers[rng.IntN(3)])
			if op.unknown && ctx.Err() == nil {
				// A client that got no answer tries again through another
				// server, with a new request ID: "already exists" then
				// means the first try happened.
				nemCreate(ctx, c, h, id, name, c.servers[rng.IntN(3)])
			}
			nemRead(ctx, c, h, id, name, c.servers[rng.IntN(3)])
			continue
		}
		if name := h.randomName(rng); name != "" {
			nemRead(ctx, c, h, id, name, c.servers[rng.IntN(3)])
		}
	}
}

func nemCreate(ctx context.Context, c *nemesisCluster, h *history, id int, name string, s *nemServer) nemOp {
	op := nemOp{client: id, create: true, name: name, server: s.id, call: h.now()}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), nemesisOpTimeout)
	res, err := c.client(s).CreateGuest(octx, api.CreateGuest{Name: name, Driver: "process", Memory: "16MiB", VCPUs: 1,
		Command: []string{"/bin/sleep", "1000"}})
	cancel()
	var ae *api.APIError
	switch {
	case err == nil:
		op.exists, op.index, op.ret = true, res.Index, h.now()
	case errors.As(err, &ae) && ae.Code == api.CodeExists:
		op.exists, op.ret, op.err = true, h.now(), err.Error()
	default:
		op.unknown, op.ret, op.err = true, math.MaxInt64, err.Error()
	}
	h.add(op)
	return op
}

func nemRead(ctx context.Context, c *nemesisCluster, h *history, id int, name string, s *nemServer) {
	op := nemOp{client: id, name: name, server: s.id, call: h.now()}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), nemesisOpTimeout)
	_, err := c.client(s).Guest(octx, name)
	cancel()
	op.ret = h.now()
	var ae *api.APIError
	switch {
	case err == nil:
		op.exists = true
	case errors.As(err, &ae) && ae.Code == api.CodeNotFound:
	default:
		// A read that got no answer changed nothing: leave it out.
		h.readFailed()
		return
	}
	h.add(op)
}

// probeReads is how many answered reads probeRestart makes.
const probeReads = 30

type probeResult struct {
	answered, catchingUp, failed int
	first                        time.Duration // from the restart's start to the first answer
}

// probeRestart reads random names on s, which is down, as fast as it
// can until probeReads reads were answered, recording them in h.
func probeRestart(ctx context.Context, c *nemesisCluster, h *history, s *nemServer, rng *rand.Rand) probeResult {
	var p probeResult
	began := time.Now()
	cl := c.client(s)
	cl.Retry = 0
	for p.answered < probeReads && ctx.Err() == nil {
		name := h.randomName(rng)
		if name == "" {
			name = "nemesis-probe"
		}
		op := nemOp{client: nemesisClients, name: name, server: s.id, call: h.now()}
		octx, cancel := context.WithTimeout(ctx, nemesisOpTimeout)
		_, err := cl.Guest(octx, name)
		cancel()
		op.ret = h.now()
		var ae *api.APIError
		switch {
		case err == nil:
			op.exists = true
		case errors.As(err, &ae) && ae.Code == api.CodeNotFound:
		case errors.As(err, &ae) && ae.Code == api.CodeCatchingUp:
			p.catchingUp++
			continue
		default:
			p.failed++
			<-time.After(5 * time.Millisecond) // polling a port that is not open yet
			continue
		}
		if p.answered == 0 {
			p.first = time.Since(began)
		}
		p.answered++
		h.add(op)
	}
	return p
}

func ackedNames(ops []nemOp) (acked []string, unknown, creates, reads int) {
	seen := map[string]bool{}
	for _, op := range ops {
		if !op.create {
			reads++
			continue
		}
		creates++
		if op.unknown {
			unknown++
		}
		if op.exists && !seen[op.name] {
			seen[op.name] = true
			acked = append(acked, op.name)
		}
	}
	return acked, unknown, creates, reads
}

// latencies returns the median and the largest latency of the answered
// creates or reads.
func latencies(ops []nemOp, create bool) (p50, top time.Duration) {
	var ds []time.Duration
	for _, op := range ops {
		if op.create == create && !op.unknown {
			ds = append(ds, op.ret-op.call)
		}
	}
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond)
}

func maxIndex(ops []nemOp) uint64 {
	var m uint64
	for _, op := range ops {
		m = max(m, op.index)
	}
	return m
}

// logSuspectReads prints the reads that missed a guest whose create had
// been acknowledged before the read began: the likely culprits.
func logSuspectReads(t *testing.T, ops []nemOp) {
	acked := map[string]time.Duration{}
	for _, op := range ops {
		if op.create && op.exists {
			if at, ok := acked[op.name]; !ok || op.ret < at {
				acked[op.name] = op.ret
			}
		}
	}
	for _, op := range ops {
		if at, ok := acked[op.name]; ok && !op.create && !op.exists && op.call > at {
			t.Logf("stale read: %s on %s at %v missed it; its create was acknowledged at %v", op.name, op.server, op.call, at)
		}
	}
}

type nemInput struct{ create bool }

type nemOutput struct{ exists, unknown bool }

// guestModel is a register per guest name: does the guest exist. A create
// makes it exist (one whose outcome is unknown may take effect at any
// time after it was invoked, or never: porcupine places it last); a read
// sees whether it exists.
var guestModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var names []string
		for _, op := range h {
			n := op.Metadata.(string)
			if _, ok := by[n]; !ok {
				names = append(names, n)
			}
			by[n] = append(by[n], op)
		}
		var out [][]porcupine.Operation
		for _, n := range names {
			out = append(out, by[n])
		}
		return out
	},
	Init: func() any { return false },
	Step: func(state, input, output any) (bool, any) {
		exists := state.(bool)
		if input.(nemInput).create {
			return true, true
		}
		return output.(nemOutput).exists == exists, exists
	},
	DescribeOperation: func(input, output any) string {
		o := output.(nemOutput)
		switch {
		case !input.(nemInput).create:
			return fmt.Sprintf("read -> %v", o.exists)
		case o.unknown:
			return "create -> ?"
		}
		return "create -> ok"
	},
	DescribeState: func(state any) string { return fmt.Sprint(state) },
}

func porcupineOps(ops []nemOp) []porcupine.Operation {
	out := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		out = append(out, porcupine.Operation{
			ClientId: op.client,
			Input:    nemInput{create: op.create},
			Call:     int64(op.call),
			Output:   nemOutput{exists: op.exists, unknown: op.unknown},
			Return:   int64(op.ret),
			Metadata: op.name,
		})
	}
	return out
}

// copyMonitor samples every agent's host for running copies of each
// guest: a guest group with processes that is not frozen. Two hosts at
// one sample is a violation of "at most one running copy".
type copyMonitor struct {
	c  *nemesisCluster
	mu sync.Mutex
	n  int
	vs []copyViolation
	// names is how the monitor learns guest names; set before run.
	names func() []string
}

type copyViolation struct {
	name  string
	nodes []string
	at    time.Time
}

func newCopyMonitor(c *nemesisCluster, names func() []string) *copyMonitor {
	return &copyMonitor{c: c, names: names}
}

func (m *copyMonitor) run(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		m.sample()
	}
}

func (m *copyMonitor) sample() {
	now := time.Now()
	var found []copyViolation
	for _, name := range m.names() {
		var on []string
		for _, a := range m.c.agents {
			if runningOn(a.cg, name) {
				on = append(on, a.id)
			}
		}
		if len(on) > 1 {
			found = append(found, copyViolation{name: name, nodes: on, at: now})
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n++
	for _, v := range found {
		dup := false
		for _, old := range m.vs {
			if old.name == v.name && slices.Equal(old.nodes, v.nodes) {
				dup = true
			}
		}
		if !dup {
			m.vs = append(m.vs, v)
		}
	}
}

func (m *copyMonitor) violations() []copyViolation {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.vs)
}

func (m *copyMonitor) samples() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}

// runningOn reports whether a guest has processes on this host that are
// not frozen, judged from its freezer group.
func runningOn(cg *cgroupdriver.Driver, name string) bool {
	dirs, err := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: name})
	if err != nil {
		return false
	}
	for _, d := range dirs {
		state, err := os.ReadFile(filepath.Join(d, "freezer.state"))
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(state)) != "THAWED" {
			return false
		}
		procs, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, pid := range strings.Fields(string(procs)) {
			if live(pid) {
				return true
			}
		}
		return false
	}
	return false
}

// live reports whether a process can still run code: not a zombie, not
// exiting, and without a SIGKILL pending. An agent kills a frozen guest by
// signalling it and then thawing it: those instants are not a copy.
func live(pid string) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(stat), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 7 || f[0] == "Z" || f[0] == "X" {
		return false
	}
	const pfExiting = 0x4
	if flags, err := strconv.ParseUint(f[6], 10, 64); err == nil && flags&pfExiting != 0 {
		return false
	}
	status, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k != "SigPnd" && k != "ShdPnd" {
			continue
		}
		if mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && mask&(1<<(9-1)) != 0 {
			return false // SIGKILL pending
		}
	}
	return true
}

// frozenOn reports whether a guest has processes on this host, all frozen.
func frozenOn(cg *cgroupdriver.Driver, name string) bool {
	dirs, err := cg.Paths(cgroupdriver.Guest{Kind: cgroupdriver.KindProcess, ID: name})
	if err != nil {
		return false
	}
	for _, d := range dirs {
		state, err := os.ReadFile(filepath.Join(d, "freezer.state"))
		if err != nil {
			continue
		}
		procs, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		return strings.TrimSpace(string(procs)) != "" && strings.TrimSpace(string(state)) == "FROZEN"
	}
	return false
}
