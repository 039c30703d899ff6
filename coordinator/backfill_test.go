package coordinator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
)

// TestStoreBackfilledFromPeer: a follower whose event store is lost after
// raft compacted its log rebuilds the store from its snapshot, then copies
// the older events from a peer, so it serves the whole history again,
// byte for byte, and the state at an old index.
func TestStoreBackfilledFromPeer(t *testing.T) {
	c := newTestCluster(t, 3, func(i int, cfg *Config, _ []*Server) {
		cfg.Raft.TrailingLogs = 10
	})
	li, leader := c.waitLeader()
	cl, _ := api.NewClient(leader.HTTPAddr())
	ctx := context.Background()
	for i := range 200 {
		if _, err := cl.CreateGuest(ctx, api.CreateGuest{Name: fmt.Sprintf("g%d", i), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged()
	fi := (li + 1) % 3
	f := c.servers[fi]
	if err := f.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	c.stops[fi]()
	if err := os.Remove(filepath.Join(c.cfgs[fi].DataDir, "events.db")); err != nil {
		t.Fatal(err)
	}
	c.cfgs[fi].Bootstrap = false
	c.start(fi)
	f = c.servers[fi]
	<-f.Ready()
	WaitFor(t, 20*time.Second, "the follower's store to reach back to index 1", func() bool {
		first, _ := f.store.Bounds()
		return first == 1
	})
	c.waitConverged()
	sameStore(t, f, leader)
	st, err := f.StateAt(5)
	if err != nil || st.Index != 5 {
		t.Fatalf("state at 5 on the rebuilt follower: %v %v", st, err)
	}
}
