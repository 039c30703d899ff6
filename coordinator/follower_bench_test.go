package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
)

// BenchmarkFollowerWrite is what a client pays for reaching a follower:
// guest creates through a follower's HTTP API, which forwards them to the
// leader, against the same creates through the leader's HTTP API, in the
// same cluster, one client at a time, alternating so noise falls on both;
// then 256 clients each way. It prints p50 and p99 of each and the ratio
// of the p50s.
//
//	go test ./coordinator -run '^$' -bench FollowerWrite -benchtime 1x
func BenchmarkFollowerWrite(b *testing.B) {
	for range b.N {
		c := newBenchCluster(b)
		li, leader := c.waitLeader()
		follower := c.servers[(li+1)%3]
		client := func(addr string) *api.Client {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = 1
			cl, err := api.NewClientWith(addr, &http.Client{Transport: tr})
			if err != nil {
				b.Fatal(err)
			}
			return cl
		}
		fc, lc := client(follower.HTTPAddr()), client(leader.HTTPAddr())
		create := func(cl *api.Client, tag string) func(int64) error {
			return func(n int64) error {
				_, err := cl.CreateGuest(context.Background(), api.CreateGuest{Name: fmt.Sprintf("%s-%d", tag, n), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
				return err
			}
		}
		fmt.Fprintf(os.Stdout, "\n3 servers on loopback, fsync on, 1 client, guest creates through the HTTP API, %v per row\n", benchWindow)
		fmt.Fprintf(os.Stdout, "%-6s %10s %10s %10s   %10s %10s %10s   %s\n", "round", "follower/s", "p50", "p99", "leader/s", "p50", "p99", "p50 follower/leader")
		var fs, ls []time.Duration
		for round := range 2 {
			f, err := measure(1, create(fc, fmt.Sprint("f", round)))
			if err != nil {
				b.Fatal(err)
			}
			l, err := measure(1, create(lc, fmt.Sprint("l", round)))
			if err != nil {
				b.Fatal(err)
			}
			fs, ls = append(fs, f.p50), append(ls, l.p50)
			fmt.Fprintf(os.Stdout, "%-6d %10.0f %10v %10v   %10.0f %10v %10v   %.2f\n", round,
				f.perSec, f.p50.Round(time.Microsecond), f.p99.Round(time.Microsecond),
				l.perSec, l.p50.Round(time.Microsecond), l.p99.Round(time.Microsecond), float64(f.p50)/float64(l.p50))
		}
		// Many clients through the follower: its forwarding must keep
		// its connections to the leader.
		pool := func(addr string) chan *api.Client {
			ch := make(chan *api.Client, 256)
			for range cap(ch) {
				ch <- client(addr)
			}
			return ch
		}
		many := func(ch chan *api.Client, tag string) func(int64) error {
			return func(n int64) error {
				cl := <-ch
				defer func() { ch <- cl }()
				return create(cl, tag)(n)
			}
		}
		fm, err := measure(256, many(pool(follower.HTTPAddr()), "fm"))
		if err != nil {
			b.Fatal(err)
		}
		lm, err := measure(256, many(pool(leader.HTTPAddr()), "lm"))
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(os.Stdout, "%-6s %10.0f %10v %10v   %10.0f %10v %10v   %.2f (ops/s follower/leader %.2f)\n", "256cl",
			fm.perSec, fm.p50.Round(time.Microsecond), fm.p99.Round(time.Microsecond),
			lm.perSec, lm.p50.Round(time.Microsecond), lm.p99.Round(time.Microsecond), float64(fm.p50)/float64(lm.p50), fm.perSec/lm.perSec)
		f, l := (fs[0]+fs[1])/2, (ls[0]+ls[1])/2
		b.ReportMetric(float64(f.Microseconds()), "follower-p50-µs")
		b.ReportMetric(float64(l.Microseconds()), "leader-p50-µs")
		b.ReportMetric(float64(f)/float64(l), "follower/leader")
	}
}

// BenchmarkAPIThroughput is corral's write path as a client sees it: guest
// creates through the leader's HTTP API (plain HTTP, no ACLs, a
// keep-alive connection per client) on 3 servers, against bare
// hashicorp/raft in the same process (3 nodes, raft-boltdb, fsync,
// loopback, corral's raft settings, raft's own BatchApplyCh batching, a
// no-op FSM, the same number of clients each applying a payload of a
// create's size).
//
// At each of 1, 16 and 256 clients every side first warms up (one window
// each, not counted: connections, the first elections' leftovers, the
// page cache), then runs apiRounds rounds, each one window of corral and
// one of bare raft, the order alternating from round to round, so that
// the machine's noise (2 shared cores) falls on both alike. It prints each
// round, then both sides' median rate and p50 and the median of the
// rounds' ratios, which it reports as corral/raft-N.
//
// Each round also runs a third side, the same creates handed to the
// leader's Server.Submit in this process: corral's whole write path but
// the HTTP hop (client, connection, server, handler). What lies between
// it and the HTTP side is the hop's cost; between it and bare raft, the
// cost of the state machine, the event store, the publisher and the
// scheduling loop.
//
//	go test ./coordinator -run '^$' -bench APIThroughput -benchtime 1x
func BenchmarkAPIThroughput(b *testing.B) {
	const (
		apiRounds = 5
		window    = time.Second
	)
	for range b.N {
		_, rafts := startBareRafts(b, 3)
		c := newBenchCluster(b)
		_, leader := c.waitLeader()
		// Each client has its own connection, as separate processes
		// would: one shared pool makes 256 goroutines queue on its lock,
		// which costs this process more than the servers' work.
		clients := make(chan *api.Client, 256)
		for range cap(clients) {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = 1
			cl, err := api.NewClientWith(leader.HTTPAddr(), &http.Client{Transport: tr})
			if err != nil {
				b.Fatal(err)
			}
			clients <- cl
		}
		payload, _ := encodeProposal("", false, false, nil)
		payload = append(payload, make([]byte, 300)...) // about a guest definition's size
		var seq atomic.Int64
		guest := func(prefix string) api.CreateGuest {
			return api.CreateGuest{Name: fmt.Sprintf("%s%d", prefix, seq.Add(1)), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}
		}
		create := func(int64) error {
			cl := <-clients
			defer func() { clients <- cl }()
			_, err := cl.CreateGuest(context.Background(), guest("a"))
			return err
		}
		submit := func(int64) error {
			o, err := leader.Submit(context.Background(), "", "bench", &cluster.CreateGuest{CreateGuest: guest("s")})
			if err == nil && o.Err != nil {
				err = o.Err
			}
			return err
		}
		bare := func(int64) error { return applyBare(rafts, payload) }
		fmt.Fprintf(os.Stdout, "\n3 servers on loopback, fsync on, guest creates through the leader's HTTP API and through Server.Submit in-process vs bare raft applies; per row a warm-up, then %d rounds of %v each side, alternating\n", apiRounds, window)
		for _, n := range []int{1, 16, 256} {
			for _, op := range []func(int64) error{create, submit, bare} {
				if _, err := measureFor(n, window, op); err != nil {
					b.Fatal(err)
				}
			}
			var cs, ss, rs []commitStats
			var ratios, inRatios []float64
			for round := range apiRounds {
				var c, sub, r commitStats
				order := []*commitStats{&c, &sub, &r}
				ops := []func(int64) error{create, submit, bare}
				if round%2 == 1 {
					order, ops = []*commitStats{&r, &sub, &c}, []func(int64) error{bare, submit, create}
				}
				for i, op := range ops {
					st, err := measureFor(n, window, op)
					if err != nil {
						b.Fatal(err)
					}
					*order[i] = st
				}
				cs, ss, rs = append(cs, c), append(ss, sub), append(rs, r)
				ratios, inRatios = append(ratios, c.perSec/r.perSec), append(inRatios, sub.perSec/r.perSec)
				fmt.Fprintf(os.Stdout, "  %3d clients, round %d: corral %7.0f ops/s p50 %9v   in-process %7.0f ops/s p50 %9v   raft %7.0f ops/s p50 %9v   %.2f\n", n, round+1,
					c.perSec, c.p50.Round(time.Microsecond), sub.perSec, sub.p50.Round(time.Microsecond), r.perSec, r.p50.Round(time.Microsecond), c.perSec/r.perSec)
			}
			mc, ms, mr := medianStats(cs), medianStats(ss), medianStats(rs)
			slices.Sort(ratios)
			slices.Sort(inRatios)
			ratio := ratios[len(ratios)/2]
			fmt.Fprintf(os.Stdout, "%3d clients, median: corral %7.0f ops/s p50 %9v   in-process %7.0f ops/s p50 %9v   raft %7.0f ops/s p50 %9v   corral/raft %.2f (rounds %.2f–%.2f), in-process/raft %.2f\n", n,
				mc.perSec, mc.p50.Round(time.Microsecond), ms.perSec, ms.p50.Round(time.Microsecond), mr.perSec, mr.p50.Round(time.Microsecond), ratio, ratios[0], ratios[len(ratios)-1], inRatios[len(inRatios)/2])
			b.ReportMetric(ratio, fmt.Sprintf("corral/raft-%d", n))
			b.ReportMetric(inRatios[len(inRatios)/2], fmt.Sprintf("inprocess/raft-%d", n))
		}
	}
}

// medianStats is the median rate and the median p50 of rounds.
func medianStats(rounds []commitStats) commitStats {
	rates := make([]float64, len(rounds))
	p50s := make([]time.Duration, len(rounds))
	for i, r := range rounds {
		rates[i], p50s[i] = r.perSec, r.p50
	}
	slices.Sort(rates)
	slices.Sort(p50s)
	return commitStats{perSec: rates[len(rates)/2], p50: p50s[len(p50s)/2]}
}

// applyBare applies payload on whichever of rafts leads, trying again on
// the new leader when leadership moves, as corral's client retries on
// another server: on a loaded machine an election can happen mid-row.
func applyBare(rafts []*raft.Raft, payload []byte) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		var err error = raft.ErrNotLeader
		for _, r := range rafts {
			if r.State() == raft.Leader {
				err = r.Apply(payload, applyTimeout).Error()
				break
			}
		}
		if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkCreateAllocs counts what one guest create costs the servers in
// allocations, through the leader's HTTP handler (no network, so only
// the server's work is counted: HTTP handling, validation, raft on 3
// servers, the state machine and the event store). Allocations per
// request hardly depend on the machine's load, unlike the rates above.
//
//	go test ./coordinator -run '^$' -bench CreateAllocs -benchtime 2000x
func BenchmarkCreateAllocs(b *testing.B) {
	c := newBenchCluster(b)
	_, leader := c.waitLeader()
	h := leader.Handler()
	body := []byte(`{"name":"%s","driver":"process","memory":"16MiB","command":["/bin/true"],"no_start":true}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		req := httptest.NewRequest("POST", "/v1/guests", bytes.NewReader(fmt.Appendf(nil, string(body), fmt.Sprint("c", i))))
		req.Header.Set(api.HeaderRequestID, api.NewRequestID())
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("create: %d %s", w.Code, w.Body)
		}
	}
}
