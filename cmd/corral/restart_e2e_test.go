package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
)

// TestNoOldReadAfterKill9: corral dev killed with -9 and started again on
// its data directory never answers a read with less than what was
// acknowledged before the kill. A reader loops from before the restart, so
// it sees the very first answers of the new process: each is either every
// guest or an explicit 503.
func TestNoOldReadAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts corral dev as a process")
	}
	t.Parallel()
	dataDir := t.TempDir()
	port := freePort(t)
	p := startDevWith(t, dataDir, "--no-agent", "--http-addr", "127.0.0.1:"+port)
	cl, err := api.NewClient(p.api)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 300
	for i := range n {
		if _, err := cl.CreateGuest(ctx, api.CreateGuest{Name: fmt.Sprintf("g%d", i), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}); err != nil {
			t.Fatal(err)
		}
	}
	p.kill9()

	var (
		full, unavailable, refused atomic.Int64
		mu                         sync.Mutex
		bad                        []string
		stop                       = make(chan struct{})
		wg                         sync.WaitGroup
	)
	hc := &http.Client{Timeout: 5 * time.Second}
	url := p.api + "/v1/guests" // the restarted process listens on the same port
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := hc.Get(url)
			if err != nil {
				refused.Add(1)
				continue
			}
			var gs []*api.Guest
			derr := json.NewDecoder(resp.Body).Decode(&gs)
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusServiceUnavailable:
				unavailable.Add(1)
			case resp.StatusCode == http.StatusOK && derr == nil && len(gs) == n:
				full.Add(1)
			default:
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s with %d guests (%v)", resp.Status, len(gs), derr))
				mu.Unlock()
			}
		}
	})
	p = startDevWith(t, dataDir, "--no-agent", "--http-addr", "127.0.0.1:"+port)
	deadline := time.Now().Add(waitTimeout)
	for full.Load() < 50 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 || full.Load() < 50 {
		t.Fatalf("reads after kill -9: %d full, %d unavailable, %d refused, and %d wrong: %v", full.Load(), unavailable.Load(), refused.Load(), len(bad), bad)
	}
	t.Logf("reads after kill -9: %d refused (not up yet), %d unavailable (catching up), %d with every guest, none with fewer", refused.Load(), unavailable.Load(), full.Load())
}
