package scheduler

import "slices"

// pendingNames finds the pending guests that appear more than once. A set
// of every name would do, but a set of a million names misses the cache on
// nearly every probe, so the cost of a guest would grow with the list. The
// names are hashed instead and the hashes sorted by radix, which reads and
// writes memory in order; only names whose hash occurs more than once (a
// repeated name, or rarely two names that collide) go into a set, and
// duplicate answers from that set alone, exactly as a set of every name
// would.
type pendingNames struct {
	repeated map[uint64]struct{} // hashes that occur more than once
	seen     map[string]struct{} // names with a repeated hash, seen so far
}

func newPendingNames(pending []Guest) pendingNames {
	hs := make([]uint64, len(pending))
	for i := range pending {
		hs[i] = nameHash(pending[i].Name)
	}
	hs = sortHashes(hs)
	var p pendingNames
	for i := 1; i < len(hs); i++ {
		if hs[i] == hs[i-1] {
			if p.repeated == nil {
				p.repeated = make(map[uint64]struct{})
				p.seen = make(map[string]struct{})
			}
			p.repeated[hs[i]] = struct{}{}
		}
	}
	return p
}

// duplicate reports whether name was passed to duplicate before, and
// remembers it. Schedule calls it once per valid guest, in order, so the
// first guest of a name is placed and every later one is a duplicate.
func (p *pendingNames) duplicate(name string) bool {
	if len(p.repeated) == 0 {
		return false
	}
	if _, ok := p.repeated[nameHash(name)]; !ok {
		return false
	}
	n := len(p.seen)
	p.seen[name] = struct{}{}
	return len(p.seen) == n
}

// nameHash is FNV-1a, 64 bits: fixed, so that nothing in a plan's making
// depends on a random seed (only speed would: the answers do not).
func nameHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// sortHashes sorts hs in six passes of a least-significant-digit radix
// sort over 11-bit digits (a count table that stays in the first-level
// cache), or with a comparison sort for short lists, and returns the sorted
// slice, which is hs or a buffer of the same length.
func sortHashes(hs []uint64) []uint64 {
	if len(hs) < 1<<12 {
		slices.Sort(hs)
		return hs
	}
	const bits = 11
	tmp := make([]uint64, len(hs))
	var count [1 << bits]int
	for shift := uint(0); shift < 64; shift += bits {
		clear(count[:])
		for _, h := range hs {
			count[h>>shift&(1<<bits-1)]++
		}
		sum := 0
		for d, c := range count {
			count[d] = sum
			sum += c
		}
		for _, h := range hs {
			d := h >> shift & (1<<bits - 1)
			tmp[count[d]] = h
			count[d]++
		}
		hs, tmp = tmp, hs
	}
	return hs
}
