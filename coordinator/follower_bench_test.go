package coordinator

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
)

// BenchmarkFollowerWrite is what a client pays for reaching a follower:
// guest creates through a follower's HTTP API, which forwards them to the
// leader, against the same creates through the leader's HTTP API, in the
// same cluster, one client at a time, alternating so noise falls on both.
// It prints p50 and p99 of each and the ratio of the p50s.
//
//	go test ./coordinator -run '^$' -bench FollowerWrite -benchtime 1x
func BenchmarkFollowerWrite(b *testing.B) {
	for range b.N {
		c := newBenchCluster(b)
		li, leader := c.waitLeader()
		follower := c.servers[(li+1)%3]
		client := func(addr string) *api.Client {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = 4
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
		f, l := (fs[0]+fs[1])/2, (ls[0]+ls[1])/2
		b.ReportMetric(float64(f.Microseconds()), "follower-p50-µs")
		b.ReportMetric(float64(l.Microseconds()), "leader-p50-µs")
		b.ReportMetric(float64(f)/float64(l), "follower/leader")
	}
}

// BenchmarkAPIThroughput is corral's write path as a client sees it: guest
// creates through the leader's HTTP API (plain HTTP, no ACLs, one
// keep-alive pool of 256 connections) on 3 servers, against bare
// hashicorp/raft in the same process (3 nodes, raft-boltdb, fsync,
// loopback, corral's raft settings and batching, a no-op FSM, the same
// number of clients each applying a payload of a create's size). It prints
// both and the ratio at 1, 16 and 256 clients.
//
//	go test ./coordinator -run '^$' -bench APIThroughput -benchtime 1x
func BenchmarkAPIThroughput(b *testing.B) {
	for range b.N {
		bare := startBareRaft(b, 3)
		c := newBenchCluster(b)
		_, leader := c.waitLeader()
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 256
		cl, err := api.NewClientWith(leader.HTTPAddr(), &http.Client{Transport: tr})
		if err != nil {
			b.Fatal(err)
		}
		payload, _ := encodeProposal("", false, false, nil)
		payload = append(payload, make([]byte, 300)...) // about a guest definition's size
		fmt.Fprintf(os.Stdout, "\n3 servers on loopback, fsync on, guest creates through the leader's HTTP API vs bare raft applies, %v per row\n", benchWindow)
		fmt.Fprintf(os.Stdout, "%-8s %12s %10s %10s   %12s %10s %10s   %s\n", "clients", "corral ops/s", "p50", "p99", "raft ops/s", "p50", "p99", "corral/raft")
		for _, clients := range []int{1, 16, 256} {
			cs, err := measure(clients, func(n int64) error {
				_, err := cl.CreateGuest(context.Background(), api.CreateGuest{Name: fmt.Sprintf("a%d-%d", clients, n), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true})
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			rs, err := measure(clients, func(int64) error { return bare.Apply(payload, applyTimeout).Error() })
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(os.Stdout, "%-8d %12.0f %10v %10v   %12.0f %10v %10v   %.2f\n", clients,
				cs.perSec, cs.p50.Round(time.Microsecond), cs.p99.Round(time.Microsecond),
				rs.perSec, rs.p50.Round(time.Microsecond), rs.p99.Round(time.Microsecond), cs.perSec/rs.perSec)
			b.ReportMetric(cs.perSec/rs.perSec, fmt.Sprintf("corral/raft-%d", clients))
		}
	}
}
