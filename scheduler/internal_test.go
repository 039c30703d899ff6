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

// TestStartIndex checks the galloping search against a binary search, for
// lists evenly spread and not.
func TestStartIndex(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		n := 1 + r.IntN(500)
		var list []int32
		p := 1 + r.IntN(4) // how sparse the list is
		skew := r.IntN(2) == 0
		for i := range n {
			if r.IntN(p) == 0 && (!skew || i < n/3 || r.IntN(8) == 0) {
				list = append(list, int32(i))
			}
		}
		if len(list) == 0 {
			continue
		}
		for start := range n {
			want, _ := slices.BinarySearch(list, int32(start))
			if got := startIndex(list, start, n); got != want {
				t.Fatalf("startIndex(%v, %d, %d) = %d, want %d", list, start, n, got, want)
			}
		}
	}
}
