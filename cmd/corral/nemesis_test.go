package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/corral-dev/corral/cgroupdriver/cgrouptest"
)

var (
	nemesisRounds = flag.Int("nemesis.rounds", 6, "TestNemesis: fault rounds to run (each holds a fault for 1-2.5 s)")
	nemesisSeed   = flag.Uint64("nemesis.seed", 0, "TestNemesis: seed of the fault schedule; 0 picks one from the clock and logs it")
)

// Bounds of TestNemesis, kept small enough for CI on two cores.
const (
	nemesisClients        = 3
	nemesisGuestsPerRound = 10                    // creates allowed per round, each a real process
	nemesisCreateGap      = time.Second           // per client
	nemesisReadGap        = 15 * time.Millisecond // per client
	nemesisOpTimeout      = 4 * time.Second
	nemesisSettle         = 30 * time.Second
	// The agents fence (freeze their guests) after 2 s without the
	// coordinator; the servers declare a node down after nemesisNodeDown.
	nemesisNodeDown = 6 * time.Second
)

// TestNemesis runs three `corral server` processes and three agents with
// process guests on loopback, lets a few clients create guests and read
// them back through random servers, and meanwhile kills (-9), pauses
// (SIGSTOP) and raft-partitions servers and kills agents, in rounds drawn
// from a seed. Then it heals everything and checks: the create/read
// history is linearizable (porcupine), no acknowledged create is missing
// on any server, the servers' event logs are dense and agree, no guest
// ever ran on two hosts at once, and nothing is left behind.
//
//	go test ./cmd/corral -run TestNemesis -v [-nemesis.rounds 20] [-nemesis.seed N]
func TestNemesis(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six corral daemons under faults")
	}
	rep := cgrouptest.RequireHost(t)
	seed := *nemesisSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rounds := *nemesisRounds
	t.Logf("nemesis: seed %d; replay with: go test ./cmd/corral -run 'TestNemesis$' -v -nemesis.seed %d -nemesis.rounds %d", seed, seed, rounds)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nemesis FAILED; replay the schedule with: go test ./cmd/corral -run 'TestNemesis$' -v -nemesis.seed %d -nemesis.rounds %d", seed, rounds)
		}
	})
	began := time.Now()

	// The raft partition needs each server in a cgroup v2 group of its own
	// (nftables matches the sending socket's group) and the nft tool.
	net, why := newNemesisNet(t, rep)
	if net == nil {
		t.Logf("nemesis: partitions skipped: %s", why)
	}
	c := startNemesisCluster(t, rep, net)

	rec := &history{start: time.Now(), maxNames: max(30, nemesisGuestsPerRound*rounds)}
	mon := newCopyMonitor(c, rec.allNames)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	wg.Go(func() { mon.run(ctx) })
	for i := range nemesisClients {
		wg.Go(func() { runNemesisClient(ctx, c, rec, i, rand.New(rand.NewPCG(seed, uint64(i)+1))) })
	}

	faults := map[string]int{}
	rng := rand.New(rand.NewPCG(seed, 0))
	kinds := []string{"kill-server", "stop-server", "kill-agent", "agent-down"}
	if net != nil {
		kinds = append(kinds, "partition-server")
	}
	// The first rounds take every kind once, in an order the seed draws.
	order := rng.Perm(len(kinds))
	for r := range rounds {
		kind := kinds[rng.IntN(len(kinds))]
		if r < len(order) {
			kind = kinds[order[r]]
		}
		if kind == "agent-down" && faults[kind] >= max(1, rounds/6) {
			kind = "kill-agent" // it takes the node-down timeout: keep it rare
		}
		hold := time.Second + time.Duration(rng.IntN(1500))*time.Millisecond
		var target string
		switch kind {
		case "agent-down":
			a := c.agents[rng.IntN(len(c.agents))]
			target = a.id
			t.Logf("nemesis: round %d: kill -9 agent %s until its node is declared down and its guests are placed elsewhere", r, a.id)
			c.agentDown(a, rec.allNames, mon.sample)
		case "kill-agent":
			a := c.agents[rng.IntN(len(c.agents))]
			target = a.id
			t.Logf("nemesis: round %d: kill -9 agent %s for %v", r, a.id, hold)
			a.d.cmd.Process.Kill()
			<-a.d.done
			<-time.After(hold)
			c.startAgent(a)
		default:
			s := c.pickServer(rng)
			target = s.id
			if l := c.leader(); l == s {
				target += " (the leader)"
			}
			switch kind {
			case "kill-server":
				t.Logf("nemesis: round %d: kill -9 server %s for %v", r, target, hold)
				s.d.cmd.Process.Kill()
				<-s.d.done
				// Read from the restarted server from the first moment its
				// API answers: no answer may be older than an acknowledged
				// write (the reads join the history).
				probe := make(chan probeResult, 1)
				go func() { probe <- probeRestart(ctx, c, rec, s, rand.New(rand.NewPCG(seed, uint64(r)+100))) }()
				<-time.After(hold)
				c.startServer(s)
				select {
				case p := <-probe:
					t.Logf("nemesis: reads on %s from its restart: %d answered (the first %v after the kill), %d catching up, %d refused or failed",
						s.id, p.answered, p.first.Round(time.Millisecond), p.catchingUp, p.failed)
				case <-time.After(nemesisSettle):
					t.Fatalf("%s answered no %d reads in %v after its restart", s.id, probeReads, nemesisSettle)
				}
			case "stop-server":
				t.Logf("nemesis: round %d: SIGSTOP server %s for %v", r, target, hold)
				s.d.cmd.Process.Signal(syscall.SIGSTOP)
				<-time.After(hold)
				s.d.cmd.Process.Signal(syscall.SIGCONT)
			case "partition-server":
				t.Logf("nemesis: round %d: partition server %s from the other servers' raft for %v", r, target, hold)
				net.isolate(s, c.servers)
				<-time.After(hold)
				// The partition must have bitten: the others lead themselves.
				c.waitMajorityLeader(s)
				net.heal()
			}
		}
		faults[kind]++
		c.waitHealthy(fmt.Sprintf("round %d (%s %s)", r, kind, target))
	}
	// Let the clients run a little on the healed cluster, then stop them.
	<-time.After(500 * time.Millisecond)
	stop()
	wg.Wait()
	c.waitHealthy("the end of the run")
	c.waitNodesUp()

	ops := rec.snapshot()
	acked, unknown, creates, reads := ackedNames(ops)
	cp50, cmax := latencies(ops, true)
	rp50, rmax := latencies(ops, false)
	t.Logf("nemesis: %d operations: %d creates (%d names acknowledged, %d tries unanswered; latency median %v max %v), %d reads (median %v max %v), %d reads unanswered (left out)",
		len(ops), creates, len(acked), unknown, cp50, cmax, reads, rp50, rmax, rec.failedReads())

	res, info := porcupine.CheckOperationsVerbose(guestModel, porcupineOps(ops), 30*time.Second)
	linear := map[porcupine.CheckResult]string{porcupine.Ok: "ok", porcupine.Illegal: "ILLEGAL", porcupine.Unknown: "unknown (timed out)"}[res]
	if res != porcupine.Ok {
		path := filepath.Join(t.ArtifactDir(), fmt.Sprintf("corral-nemesis-%d.html", seed))
		if err := porcupine.VisualizePath(guestModel, info, path); err == nil {
			t.Logf("nemesis: history visualized in %s (kept with -artifacts DIR)", path)
		}
		t.Errorf("the guest create/read history is not linearizable: %s", linear)
		logSuspectReads(t, ops)
	}

	lost := c.checkAckedEverywhere(acked)
	c.waitOneCopyEach(acked)
	divergent := c.checkLogs(maxIndex(ops))
	mon.sample() // the last instant too
	dups := mon.violations()
	for _, v := range dups {
		t.Errorf("guest %s ran on %v at once (%s into the run)", v.name, v.nodes, v.at.Sub(rec.start).Round(time.Millisecond))
	}
	orphans := c.destroyAll()
	c.stopAll()
	orphans += c.checkNoStrays()

	t.Logf("nemesis: seed %d rounds %d faults %s | ops %d acknowledged %d lost %d | duplicate running guests %d (%d samples) | divergent servers %d | orphans %d | linearizable %s | %v",
		seed, rounds, formatFaults(faults), len(ops), len(acked), lost, len(dups), mon.samples(), divergent, orphans, linear, time.Since(began).Round(100*time.Millisecond))
	if len(c.knownBugs) > 0 && !t.Failed() {
		// Every check above passed; only a bug reported elsewhere showed.
		t.Skipf("every nemesis check passed, but a known bug showed: %s (hashicorp/raft pipeline replication deadlock; fix in coordinator/server.go: disable pipelining)", strings.Join(c.knownBugs, "; "))
	}
}

func formatFaults(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}
