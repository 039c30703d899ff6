package coordinator

import (
	"errors"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

func testFSM(t *testing.T) *fsm {
	t.Helper()
	store, err := OpenStore(filepath.Join(t.TempDir(), "events.db"), DefaultStoreConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f := newFSM(store, 10000, slog.New(slog.DiscardHandler))
	t.Cleanup(f.close)
	return f
}

// createProposal is a create of name decided against f's state, as the
// leader would propose it.
func createProposal(t *testing.T, f *fsm, reqID, name string) []byte {
	t.Helper()
	cmd := &cluster.CreateGuest{CreateGuest: api.CreateGuest{Name: name, Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}}
	var evs []events.Event
	var err error
	f.read(func(st *cluster.State) { evs, err = cmd.Decide(st, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), "t") })
	if err != nil {
		t.Fatal(err)
	}
	data, err := encodeProposal(reqID, false, false, evs)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestBatchEntryAppliesEachProposal: a batch entry applies its proposals
// in order, each with its own outcome and indexes; one that fails (a
// second create of a name) fails alone, and a request ID repeated inside
// the batch gets the first one's outcome.
func TestBatchEntryAppliesEachProposal(t *testing.T) {
	f := testFSM(t)
	a := createProposal(t, f, "ra", "a")
	dup := createProposal(t, f, "rdup", "a") // decided before a committed
	b := createProposal(t, f, "rb", "b")
	again := createProposal(t, f, "ra", "c") // a retry of ra's request ID
	entry := encodeBatch([][]byte{a, dup, b, again})
	out := f.ApplyBatch([]*raft.Log{{Index: 7, Type: raft.LogCommand, Data: entry}})
	outs, ok := out[0].(batchOutcome)
	if !ok || len(outs) != 4 {
		t.Fatalf("response %#v, want 4 outcomes", out[0])
	}
	if outs[0].Err != nil || !slices.Equal(outs[0].Indexes, []uint64{1}) {
		t.Fatalf("a: %+v", outs[0])
	}
	if outs[1].Err == nil || outs[1].Err.Code != api.CodeExists || len(outs[1].Indexes) != 0 {
		t.Fatalf("second create of a: %+v, want already_exists alone", outs[1])
	}
	if outs[2].Err != nil || !slices.Equal(outs[2].Indexes, []uint64{2}) {
		t.Fatalf("b: %+v", outs[2])
	}
	if outs[3] != outs[0] {
		t.Fatalf("repeated request ID: %+v, want a's outcome %+v", outs[3], outs[0])
	}
	f.read(func(st *cluster.State) {
		if st.Index != 2 || st.Guests["a"] == nil || st.Guests["b"] == nil || st.Guests["c"] != nil {
			t.Fatalf("state at %d with guests %v", st.Index, slices.Sorted(maps.Keys(st.Guests)))
		}
	})
	if err := f.drainStore(); err != nil {
		t.Fatal(err)
	}
	recs, _ := f.store.Read(0, 10)
	if len(recs) != 2 || recs[0].Index != 1 || recs[1].Index != 2 {
		t.Fatalf("stored %v", recs)
	}
	// The subject indexes the state machine hands the store agree with
	// what the records say.
	for i, name := range []string{"a", "b"} {
		got, _, err := f.store.ReadSubject(SubjectGuest, name, 0, 10)
		if err != nil || len(got) != 1 || got[0].Index != uint64(i+1) {
			t.Fatalf("guest %s's history: %v, %v", name, got, err)
		}
		if s, _ := subjectOf(got[0].Data); s.Guest != name {
			t.Fatalf("record %d is about %+v", got[0].Index, s)
		}
	}
}

// TestBatchEntryEncoding pins the batch entry's bytes, so that logs
// written by this version stay readable; a version 1 entry decodes as it
// always did.
func TestBatchEntryEncoding(t *testing.T) {
	v1a := []byte{1, 0, 1, 'x', 0}
	v1b := []byte{1, 1, 0, 0}
	got := encodeBatch([][]byte{v1a, v1b})
	want := []byte{2, 0, 2, 5, 1, 0, 1, 'x', 0, 4, 1, 1, 0, 0}
	if !slices.Equal(got, want) {
		t.Fatalf("batch encodes as %v, want %v", got, want)
	}
	props, batch := decodeEntry(want)
	if !batch || len(props) != 2 || props[0].reqID != "x" || props[0].independent || !props[1].independent || props[0].err != nil || props[1].err != nil {
		t.Fatalf("decoded %+v batch=%v", props, batch)
	}
	props, batch = decodeEntry(v1a)
	if batch || len(props) != 1 || props[0].reqID != "x" {
		t.Fatalf("v1 decoded %+v batch=%v", props, batch)
	}
	for _, bad := range [][]byte{{2}, {2, 1, 0}, {2, 0, 2, 5, 1, 0}, {2, 0, 1, 3, 2, 0, 0}} {
		props, batch := decodeEntry(bad)
		if !batch || len(props) != 1 || !errors.Is(props[0].err, events.ErrMalformed) {
			t.Fatalf("%v decoded %+v batch=%v, want one malformed proposal", bad, props, batch)
		}
	}
}

// fakeApply is raft for the proposer: it records each entry and commits
// it when release is called, answering as the state machine would.
type fakeApply struct {
	mu      sync.Mutex
	entries [][]byte
	futures []*fakeFuture
}

type fakeFuture struct {
	done chan struct{}
	resp any
	err  error
}

func (f *fakeFuture) Error() error      { <-f.done; return f.err }
func (f *fakeFuture) Response() any     { return f.resp }
func (f *fakeFuture) Index() uint64     { return 0 }
func (f *fakeApply) count() int         { f.mu.Lock(); defer f.mu.Unlock(); return len(f.entries) }
func (f *fakeApply) entry(i int) []byte { f.mu.Lock(); defer f.mu.Unlock(); return f.entries[i] }

func (f *fakeApply) apply(data []byte, _ time.Duration) raft.ApplyFuture {
	f.mu.Lock()
	defer f.mu.Unlock()
	fu := &fakeFuture{done: make(chan struct{})}
	f.entries = append(f.entries, data)
	f.futures = append(f.futures, fu)
	return fu
}

// release commits entry i: each proposal's outcome is its request ID's
// length as an index, or err for the whole entry.
func (f *fakeApply) release(i int, err error) {
	f.mu.Lock()
	fu, data := f.futures[i], f.entries[i]
	f.mu.Unlock()
	props, batch := decodeEntry(data)
	outs := make(batchOutcome, len(props))
	for j, p := range props {
		outs[j] = &cluster.Outcome{Indexes: []uint64{uint64(len(p.reqID))}}
	}
	if batch {
		fu.resp = outs
	} else {
		fu.resp = outs[0]
	}
	fu.err = err
	close(fu.done)
}

// TestProposerCoalesces: a proposal goes to raft at once while fewer than
// maxInflight entries are there; what arrives meanwhile waits and then
// goes as one batch entry, each proposal getting its own outcome, and a
// failed entry fails each of its proposals.
func TestProposerCoalesces(t *testing.T) {
	fa := &fakeApply{}
	p := newProposer(fa.apply)
	p.maxInflight = 1
	prop := func(reqID string) []byte { b, _ := encodeProposal(reqID, false, false, nil); return b }
	// A proposal raft takes at once is awaited by its caller: propose
	// returns once the entry is applied.
	firstc := make(chan (<-chan proposalResult), 1)
	go func() { firstc <- p.propose(prop("1")) }()
	WaitFor(t, 5*time.Second, "the first entry", func() bool { return fa.count() == 1 })
	if fa.entry(0)[0] != proposalV1 {
		t.Fatalf("a lone proposal: %d entries, want one version 1 entry", fa.count())
	}
	var waiting []<-chan proposalResult
	for _, id := range []string{"22", "333", "4444"} {
		waiting = append(waiting, p.propose(prop(id)))
	}
	if fa.count() != 1 {
		t.Fatalf("%d entries while the first is in flight, want 1", fa.count())
	}
	fa.release(0, nil)
	if r := <-<-firstc; r.err != nil || !slices.Equal(r.outcome.Indexes, []uint64{1}) {
		t.Fatalf("first: %+v", r)
	}
	WaitFor(t, 5*time.Second, "the batch entry", func() bool { return fa.count() == 2 })
	if props, batch := decodeEntry(fa.entry(1)); !batch || len(props) != 3 {
		t.Fatalf("second entry holds %d proposals (batch=%v), want the 3 that waited", len(props), batch)
	}
	fa.release(1, nil)
	for i, c := range waiting {
		if r := <-c; r.err != nil || !slices.Equal(r.outcome.Indexes, []uint64{uint64(i + 2)}) {
			t.Fatalf("proposal %d: %+v", i, r)
		}
	}
	ac := make(chan (<-chan proposalResult), 1)
	go func() { ac <- p.propose(prop("5")) }()
	WaitFor(t, 5*time.Second, "the third entry", func() bool { return fa.count() == 3 })
	b := p.propose(prop("6"))
	fa.release(2, nil)
	<-<-ac
	WaitFor(t, 5*time.Second, "the next entry", func() bool { return fa.count() == 4 })
	fa.release(3, raft.ErrLeadershipLost)
	if r := <-b; !errors.Is(r.err, raft.ErrLeadershipLost) {
		t.Fatalf("proposal of a failed entry: %+v", r)
	}
}
