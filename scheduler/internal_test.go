package scheduler

import (
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"
)

// TestSortHashes checks the radix sort against a comparison sort, on both
// sides of the length where it takes over.
func TestSortHashes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 5, 1<<12 - 1, 1 << 12, 50_000} {
		hs := make([]uint64, n)
		for i := range hs {
			hs[i] = r.Uint64() >> r.IntN(64)
		}
		want := slices.Sorted(slices.Values(hs))
		if got := sortHashes(hs); !slices.Equal(got, want) {
			t.Errorf("sortHashes of %d hashes is not sorted", n)
		}
	}
}

// TestHotNodeIsOneLine keeps a visit to a node at one cache line.
func TestHotNodeIsOneLine(t *testing.T) {
	if n := unsafe.Sizeof(hotNode{}); n != 64 {
		t.Errorf("hotNode is %d bytes; keep it one 64-byte cache line", n)
	}
}
