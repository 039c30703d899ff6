package coordinator

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// A batch entry (proposal version 2) is one raft log entry holding several
// proposals that reached the leader together: a version byte, a flags
// byte (zero) and the proposals' version 1 encodings, the count and each
// one preceded by its length as a uvarint. The state machine applies them
// in order, as if each had its own entry: each keeps its request ID, its
// own outcome and its events' indexes, and one that fails fails alone.
// Its response is a batchOutcome, one outcome per proposal in order.
const proposalBatchV2 = 2

// batchOutcome is the state machine's response to a batch entry.
type batchOutcome []*cluster.Outcome

func encodeBatch(props [][]byte) []byte {
	n := 8
	for _, p := range props {
		n += len(p) + binary.MaxVarintLen32
	}
	buf := make([]byte, 0, n)
	buf = append(buf, proposalBatchV2, 0)
	buf = binary.AppendUvarint(buf, uint64(len(props)))
	for _, p := range props {
		buf = binary.AppendUvarint(buf, uint64(len(p)))
		buf = append(buf, p...)
	}
	return buf
}

// decodeEntry decodes a command entry's proposals: one for a version 1
// entry, batch=false; each of a batch entry's, batch=true. A batch whose
// framing is broken decodes as one proposal carrying the error.
func decodeEntry(data []byte) (props []decodedProposal, batch bool) {
	if len(data) == 0 || data[0] != proposalBatchV2 {
		return []decodedProposal{decodeProposal(data)}, false
	}
	broken := func(err error) ([]decodedProposal, bool) { return []decodedProposal{{err: err}}, true }
	if len(data) < 2 || data[1] != 0 {
		return broken(fmt.Errorf("%w: unknown batch flags", events.ErrMalformed))
	}
	rest := data[2:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > uint64(len(rest)) {
		return broken(errShortProposal)
	}
	rest = rest[k:]
	props = make([]decodedProposal, n)
	for i := range props {
		var p []byte
		var err error
		if p, rest, err = readChunk(rest); err != nil {
			return broken(err)
		}
		if len(p) > 0 && p[0] == proposalBatchV2 {
			return broken(fmt.Errorf("%w: a batch inside a batch", events.ErrMalformed))
		}
		props[i] = decodeProposal(p)
	}
	return props, true
}

// proposer is the leader's group commit. A proposal finding fewer than
// maxInflight entries in raft goes into an entry of its own at once, so a
// lone client waits for nothing more than its own commit; proposals that
// arrive while maxInflight entries are in raft wait for one of them to
// commit and then go together as one batch entry. Raft then writes,
// replicates and applies one entry for many proposals.
//
// propose is called from any goroutine; each entry's future is awaited on
// a goroutine of its own.
type proposer struct {
	apply       func(data []byte, timeout time.Duration) raft.ApplyFuture
	maxInflight int
	maxBatch    int // proposals in one entry
	maxBytes    int // bytes of proposals in one entry, unless just one

	mu       sync.Mutex
	inflight int
	queue    []*pendingProposal
}

// Group commit limits. Two entries in flight: whatever arrives while both
// are in raft goes as the next one. On 2 cores, creates through Submit
// from 256 goroutines committed 17,300/s with two, 13,600 with one, 13,000
// with four and 12,900 with no limit (an entry per create); through the
// HTTP API with 256 clients two did as well as one, four or eight, and a
// third better than no limit. With 16 goroutines and nothing else to do
// no limit is fastest (5,500/s, against 4,100 with two): raft pipelines
// entries that a held proposal waits for. An entry is kept well below
// what raft sends in one append.
const (
	proposeInflight = 2
	proposeBatch    = 512
	proposeBytes    = 1 << 20
)

type pendingProposal struct {
	data []byte
	done chan proposalResult // buffered: the proposer never blocks on it
}

type proposalResult struct {
	outcome *cluster.Outcome
	err     error // raft's: the proposal may or may not have committed
}

func newProposer(apply func([]byte, time.Duration) raft.ApplyFuture) *proposer {
	return &proposer{apply: apply, maxInflight: proposeInflight, maxBatch: proposeBatch, maxBytes: proposeBytes}
}

// propose hands a version 1 proposal to raft and returns where its result
// arrives, once the entry that holds it has committed and been applied
// here, or raft has given up on it.
//
// A caller whose proposal raft takes at once waits for the entry itself
// and delivers its results before propose returns, so that a lone client's
// answer goes from raft's state machine to it without passing through
// another goroutine (each such hand-off costs tens of microseconds on a
// small VM); what queued meanwhile is sent on a goroutine of its own.
func (p *proposer) propose(data []byte) <-chan proposalResult {
	pp := &pendingProposal{data: data, done: make(chan proposalResult, 1)}
	p.mu.Lock()
	p.queue = append(p.queue, pp)
	batch := p.takeLocked()
	p.mu.Unlock()
	if batch != nil {
		p.run(batch)
	}
	return pp.done
}

// takeLocked removes the next entry's proposals from the queue and counts
// it in flight, or returns nil when raft has maxInflight entries already
// or nothing waits.
func (p *proposer) takeLocked() []*pendingProposal {
	if p.inflight >= p.maxInflight || len(p.queue) == 0 {
		return nil
	}
	n, size := 0, 0
	for n < len(p.queue) && n < p.maxBatch && (n == 0 || size+len(p.queue[n].data) <= p.maxBytes) {
		size += len(p.queue[n].data)
		n++
	}
	batch := p.queue[:n:n]
	if n == len(p.queue) {
		p.queue = nil
	} else {
		p.queue = p.queue[n:]
	}
	p.inflight++
	return batch
}

// run applies batch as one entry, waits for it, delivers the results and
// starts sending what queued meanwhile on a goroutine of its own.
func (p *proposer) run(batch []*pendingProposal) {
	var data []byte
	if len(batch) == 1 {
		data = batch[0].data // as it would be alone: a version 1 entry
	} else {
		props := make([][]byte, len(batch))
		for i, pp := range batch {
			props[i] = pp.data
		}
		data = encodeBatch(props)
	}
	deliver(batch, p.apply(data, applyTimeout))
	p.mu.Lock()
	p.inflight--
	next := p.takeLocked()
	p.mu.Unlock()
	if next != nil {
		go p.run(next)
	}
}

// deliver waits for f and gives each proposal of batch its result.
func deliver(batch []*pendingProposal, f raft.ApplyFuture) {
	if err := f.Error(); err != nil {
		for _, pp := range batch {
			pp.done <- proposalResult{err: err}
		}
		return
	}
	switch r := f.Response().(type) {
	case *cluster.Outcome:
		if len(batch) == 1 {
			batch[0].done <- proposalResult{outcome: r}
			return
		}
	case batchOutcome:
		if len(r) == len(batch) {
			for i, pp := range batch {
				pp.done <- proposalResult{outcome: r[i]}
			}
			return
		}
	}
	// Not an answer to what was proposed: whether it committed is
	// unknown, as after a timeout.
	err := fmt.Errorf("corral: the state machine answered %T to %d proposals", f.Response(), len(batch))
	for _, pp := range batch {
		pp.done <- proposalResult{err: err}
	}
}
