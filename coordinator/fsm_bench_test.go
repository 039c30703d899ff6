package coordinator

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/events"
)

// BenchmarkApplyBatch measures the state machine's cost per event on one
// server: decode, apply, encode and store, in batches of 256 (each batch
// waits for the store writer, so that its transactions are counted).
func BenchmarkApplyBatch(b *testing.B) {
	store, err := OpenStore(filepath.Join(b.TempDir(), "events.db"), DefaultStoreConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	f := newFSM(store, 10000, slog.New(slog.DiscardHandler))
	defer f.close()
	now := time.Now()
	const batch = 256
	logs := make([]*raft.Log, batch)
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		for j := range logs {
			cmd := &cluster.CreateGuest{CreateGuest: api.CreateGuest{Name: fmt.Sprintf("g%d", i+j), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}}
			evs, err := cmd.Decide(f.state, now, "bench")
			if err != nil {
				b.Fatal(err)
			}
			data, _ := encodeProposal("", false, false, evs)
			logs[j] = &raft.Log{Type: raft.LogCommand, Data: data}
		}
		f.ApplyBatch(logs)
		if err := f.drainStore(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestStoredEncodingIsCanonical checks that splicing the index into the
// proposed bytes gives exactly what encoding the committed event gives.
func TestStoredEncodingIsCanonical(t *testing.T) {
	store, err := OpenStore(filepath.Join(t.TempDir(), "events.db"), DefaultStoreConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	f := newFSM(store, 10000, slog.New(slog.DiscardHandler))
	defer f.close()
	cmd := &cluster.CreateGuest{CreateGuest: api.CreateGuest{Name: "g", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}}}
	evs, _ := cmd.Decide(f.state, time.Now(), "t")
	data, _ := encodeProposal("", false, false, evs)
	f.ApplyBatch([]*raft.Log{{Type: raft.LogCommand, Data: data}})
	if err := f.drainStore(); err != nil {
		t.Fatal(err)
	}
	recs, _ := store.Read(0, 10)
	if len(recs) != 2 {
		t.Fatalf("%d records", len(recs))
	}
	for i, r := range recs {
		e := evs[i]
		e.Index = r.Index
		want, _ := events.Marshal(e)
		if string(r.Data) != string(want) {
			t.Fatalf("stored %s\nwant   %s", r.Data, want)
		}
	}
}
