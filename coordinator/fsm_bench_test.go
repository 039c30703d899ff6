package coordinator

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// BenchmarkApplyBatch measures the state machine's cost per event on one
// server: decode, apply, encode and store, in batches of 256.
func BenchmarkApplyBatch(b *testing.B) {
	store, err := OpenStore(filepath.Join(b.TempDir(), "events.db"), DefaultStoreConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	f := newFSM(store, 10000, slog.New(slog.DiscardHandler))
	now := time.Now()
	const batch = 256
	logs := make([]*raft.Log, batch)
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		for j := range logs {
			cmd := &CreateGuest{Name: fmt.Sprintf("g%d", i+j), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}
			evs, err := cmd.Decide(f.state, now, "bench")
			if err != nil {
				b.Fatal(err)
			}
			data, _ := encodeProposal("", false, evs)
			logs[j] = &raft.Log{Type: raft.LogCommand, Data: data}
		}
		f.ApplyBatch(logs)
	}
}
