package scheduler

import (
	"math/rand/v2"
	"slices"
	"testing"
)

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
