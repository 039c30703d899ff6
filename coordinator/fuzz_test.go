package coordinator

import (
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/cluster"
	"github.com/corral-dev/corral/events"
)

// FuzzDecodeProposal: whatever bytes a raft entry holds, decoding must not
// panic, and an entry that decodes must re-encode to the same events;
// batch entries too.
func FuzzDecodeProposal(f *testing.F) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	evs, _ := (&cluster.CreateGuest{CreateGuest: api.CreateGuest{Name: "g", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}}}).Decide(cluster.NewState(), now, "fuzz")
	good, _ := encodeProposal("req", false, false, evs)
	f.Add(good)
	f.Add(encodeBatch([][]byte{good, good}))
	f.Add([]byte{1, 0, 0, 1, 3, '{', '}', '}'})
	f.Add([]byte{1, 1, 200, 200, 200, 200})
	f.Fuzz(func(t *testing.T, b []byte) {
		props, _ := decodeEntry(b)
		for _, d := range props {
			if d.err != nil {
				continue
			}
			for i, e := range d.events {
				if d.errs[i] != nil {
					continue
				}
				if _, err := events.Marshal(e); err != nil {
					t.Fatalf("decoded event does not encode: %v", err)
				}
			}
		}
	})
}
