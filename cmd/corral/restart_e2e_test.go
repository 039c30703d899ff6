package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
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
	cl := p.client()
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
		bad                        = map[string]int{} // each wrong answer, with how often it came
		stop                       = make(chan struct{})
		wg                         sync.WaitGroup
	)
	// The restarted process listens on the same port, with the same
	// certificates and token, which live in its data directory.
	hc, token := p.httpClient(5*time.Second), p.token()
	req, err := http.NewRequest(http.MethodGet, p.api+"/v1/guests", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(api.HeaderToken, token)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := hc.Do(req)
			if err != nil {
				refused.Add(1)
				continue
			}
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			var gs []*api.Guest
			derr := errors.Join(rerr, json.Unmarshal(body, &gs))
			switch {
			case resp.StatusCode == http.StatusServiceUnavailable:
				unavailable.Add(1)
			case resp.StatusCode == http.StatusOK && derr == nil && len(gs) == n:
				full.Add(1)
			default:
				what := fmt.Sprintf("%s with %d guests", resp.Status, len(gs))
				if resp.StatusCode != http.StatusOK {
					what = fmt.Sprintf("%s: %.300s", resp.Status, bytes.TrimSpace(body))
				}
				mu.Lock()
				bad[what]++
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
		var wrong []string
		for what, k := range bad {
			wrong = append(wrong, fmt.Sprintf("%d× %s", k, what))
		}
		slices.Sort(wrong)
		t.Fatalf("reads after kill -9: %d full, %d unavailable, %d refused, and wrong:\n%s", full.Load(), unavailable.Load(), refused.Load(), strings.Join(wrong, "\n"))
	}
	t.Logf("reads after kill -9: %d refused (not up yet), %d unavailable (catching up), %d with every guest, none with fewer", refused.Load(), unavailable.Load(), full.Load())
}
