package scheduler

import (
	"math/bits"
	"slices"
	"strings"
)

// working is the mutable state of one Schedule (or CheckPlacement) call: the
// snapshot's usage summed per node, then updated as the plan places guests,
// so that placements within one plan account for each other. Nodes are laid
// out by position in a seeded permutation, so a scan in that order walks
// memory sequentially.
type working struct {
	cfg   Config
	nodes []Node  // sorted by ID
	order []int32 // position -> index in nodes
	posOf []int32 // index in nodes -> position
	hot   []hotNode
	cold  []coldNode

	classes  []int32               // class -> a representative node index
	feasible map[string]classCodes // Guest.feasibilityKey -> nodeAccepts per class
	// classPos lists each class's positions; byStatus counts, by reason,
	// the nodes not up and eligible. failure counts whole classes with them.
	classPos [][]int32
	byStatus [len(reasonNames)]int

	// Anti-affinity. Only labels whose key some guest spreads by are
	// tracked: spreadAt[pos] counts, per pair key=value, the guests at pos
	// carrying it and the guests at pos spreading by key with that value.
	// Most nodes hold no pair and a few hold one or two, so a short list per
	// position, read in scan order, beats a map keyed by (pair, position),
	// whose every lookup misses the cache once the cluster is large.
	spreadKeys map[string]bool
	pairs      map[string]int32
	spreadAt   [][]pairCount

	// planned lists, per position, the plan placements that reasons may
	// have to name (pinned or anti-affinity-relevant); indices into plan.
	plan    *Plan
	planned [][]int32
	cursor  int

	// Scan levels (see open and closeIfFull). Level (k, j) holds the nodes
	// that may still take a guest of at least memT[k] bytes and, for j > 0,
	// at least cpuT[j] shared vCPUs; level (0, 0) holds those that may take
	// any pending guest. skips[k*len(cpuT)+j][pos] == pos while pos is open
	// at that level; a closed position points further on, and the entry at
	// len(hot) is the end sentinel.
	//
	// skips alone decide where spread's cursor lands (see pick), so they
	// keep the rule they have always had. The scan itself uses sharedSkips
	// and pinSkips at shared level 0, which also close a node on the rule
	// of the guest's own kind: a shared guest needs cpuT[0] shared vCPUs, a
	// pinned one minPin free CPUs and a shared pool that still holds the
	// shared vCPUs on the node once they are taken. Without them a node
	// full of shared vCPUs stays open for shared guests (it still has CPUs
	// to pin) and bin-pack would cross every such node for each guest.
	allSkips     [][]int32 // skips, then sharedSkips, then pinSkips
	skips        [][]int32
	sharedSkips  [][]int32 // per memory level
	pinSkips     [][]int32 // per memory level
	memT, cpuT   []int64
	minPin       int64
	sharedLevels bool
}

// maxMemLevels and maxCPULevels bound the scan levels: thresholds double,
// so 8 memory levels cover guests 128 times the smallest.
const (
	maxMemLevels = 8
	maxCPULevels = 4
)

// Every scan list needs a bit of hotNode.closed: the levels, then a shared
// and a pinned list per memory level. (A negative constant fails here.)
const _ = uint(64 - maxMemLevels*maxCPULevels - 2*maxMemLevels)

// hotNode is what the scan reads for every node it visits, feasibility and
// score alike (score derives the use from capacity minus free), so that a
// visit reads one cache line: 64 bytes, and a slice of them large enough
// to matter starts on a page, so no record straddles two lines. A guest
// that few nodes accept visits nodes far apart, one line each.
type hotNode struct {
	memFree    int64 // memory capacity minus use; negative when over-committed
	memCap     int64
	sharedFree int64  // shared vCPU capacity minus use
	sharedCap  int64  // overcommitted(alloc - pinned)
	freePin    int64  // allocatable CPUs not pinned
	alloc      int64  // len(CPUs) - ReservedCPUs
	class      int32  // feasibility class, -1 when not up and eligible
	pairBits   uint32 // pairBit of every anti-affinity pair counted here
	// closed has bit s set when the node is closed in allSkips[s], so that
	// the scan (openAt) and a closing (closeAt) read this line, which the
	// visit reads anyway, and a skip list only to cross closed nodes.
	closed uint64
}

// The use of a node is its capacity minus what is free, so that nothing
// but the node's line is read or written to place a shared guest.

// memUsed is the memory allocated on the node.
func (h *hotNode) memUsed() int64 { return h.memCap - h.memFree }

// shared is the vCPUs of the unpinned guests on the node.
func (h *hotNode) shared() int64 { return h.sharedCap - h.sharedFree }

// pinned is the CPUs outside the reserve that guests have pinned.
func (h *hotNode) pinned() int64 { return h.alloc - h.freePin }

// coldNode is what only the chosen node, reasons and pinning read.
type coldNode struct {
	node  *Node
	id    string // node.ID, kept here so a placement does not chase node
	taken []uint64
}

// classCodes is nodeAccepts for every class, for one feasibility key.
type classCodes struct {
	codes    []ReasonCode
	accepted bool      // some code is ReasonNone
	few      *keyIndex // set when few nodes accept the key
}

// keyIndex is the positions whose class accepts one feasibility key, for
// a key that few nodes accept (a rack constraint, say): a guest with it
// scans only those, so its cost does not grow with the nodes that can
// never take it. skips[s] is a skip list over the indices of pos for the
// scan list w.allSkips[s], made when first used and closed lazily: an
// entry closes when the scan meets a node closed in w.allSkips[s], which
// stays closed for the rest of the plan.
type keyIndex struct {
	pos   []int32 // ascending
	skips [][]int32
}

// plainScan turns off what only makes the scan faster (sharedSkips,
// pinSkips, keyIndex), so that a test can check that plans do not change.
var plainScan bool

// fewNodes is when a key gets a keyIndex: at most one node in
// fewNodesRatio accepts it, and the cluster has more than minKeyIndexNodes.
const (
	fewNodesRatio    = 4
	minKeyIndexNodes = 64
)

// pairCount is one pair's anti-affinity counts at a position.
type pairCount struct {
	pair   int32
	labels int32 // guests carrying the pair
	claims int32 // guests spreading by the pair's key with its value
}

// demand is one guest's requirements, resolved against the working state.
type demand struct {
	g          *Guest
	mem        int64
	vcpus      int64 // shared vCPUs; 0 when pinned
	pin        int64 // exclusive CPUs
	cpuset     CPUSet
	class      []ReasonCode // nodeAccepts per node class
	accepted   bool         // some class accepts the guest
	few        *keyIndex    // the nodes that accept the guest, when few do
	spreadPair int32        // pair of (SpreadBy, its value), -1 when not spreading
	labelPairs []int32      // pairs of the guest's labels under tracked keys
	pairBits   uint32       // pairBit of spreadPair and labelPairs
}

// pairBit is pair's bit in a 32-bit filter: a node whose hotNode.pairBits
// share no bit with a guest's counts none of its pairs, and the scan
// answers that from the node's line without reading spreadAt.
func pairBit(pair int32) uint32 { return 1 << (pair & 31) }

func (d *demand) spreading() bool { return d.spreadPair >= 0 || len(d.labelPairs) > 0 }

func newWorking(nodes []Node, pending []Guest, cfg Config, seed uint64) *working {
	n := len(nodes)
	w := &working{
		cfg:      cfg,
		nodes:    nodes,
		order:    permutation(n, seed),
		posOf:    make([]int32, n),
		hot:      make([]hotNode, n),
		cold:     make([]coldNode, n),
		planned:  make([][]int32, n),
		feasible: make(map[string]classCodes),
	}
	for i := range pending {
		w.addSpreadKey(pending[i].SpreadBy)
	}
	w.levels(pending)
	words := 0
	for i := range nodes {
		for j := range nodes[i].Allocations {
			w.addSpreadKey(nodes[i].Allocations[j].SpreadBy)
		}
		words += (len(nodes[i].CPUs) + 63) / 64
	}
	taken := make([]uint64, words) // pinned-CPU bitsets, one slice per node
	classOf := make(map[string]int32)
	var key strings.Builder
	for pos, idx := range w.order {
		w.posOf[idx] = int32(pos)
		node := &nodes[idx]
		c := &w.cold[pos]
		c.node = node
		nw := (len(node.CPUs) + 63) / 64
		c.taken, taken = taken[:nw:nw], taken[nw:]
		w.account(int32(pos), node)
		h := &w.hot[pos]
		h.class = -1
		if node.Status == NodeUp && node.Eligibility == Eligible {
			key.Reset()
			writeClassKey(&key, node)
			id, ok := classOf[key.String()]
			if !ok {
				id = int32(len(w.classes))
				classOf[key.String()] = id
				w.classes = append(w.classes, idx)
			}
			h.class = id
			if int(id) == len(w.classPos) {
				w.classPos = append(w.classPos, nil)
			}
			w.classPos[id] = append(w.classPos[id], int32(pos))
		} else {
			w.byStatus[statusReason(node)]++
		}
		w.closeIfFull(pos)
	}
	return w
}

// account sums the node's existing allocations into its position.
func (w *working) account(pos int32, node *Node) {
	c, h := &w.cold[pos], &w.hot[pos]
	c.id = node.ID
	h.memCap = overcommitted(int64(node.MemoryBytes-node.ReservedMemoryBytes), w.cfg.MemoryOvercommit)
	h.alloc = int64(len(node.CPUs) - node.ReservedCPUs)
	var memUsed, shared, pinned int64
	for i := range node.Allocations {
		a := &node.Allocations[i]
		memUsed += int64(a.MemoryBytes)
		if len(a.CPUs) == 0 {
			shared += int64(a.VCPUs)
		}
		for _, cpu := range a.CPUs {
			if j, ok := slices.BinarySearch(node.CPUs, cpu); ok {
				c.taken[j/64] |= 1 << (j % 64)
				if j >= node.ReservedCPUs {
					pinned++
				}
			}
		}
		if len(w.spreadKeys) > 0 {
			w.countLabels(pos, a.Labels, a.SpreadBy, 1)
		}
	}
	h.sharedCap = overcommitted(h.alloc-pinned, w.cfg.CPUOvercommit)
	h.memFree = h.memCap - memUsed
	h.sharedFree = h.sharedCap - shared
	h.freePin = h.alloc - pinned
}

func writeClassKey(b *strings.Builder, n *Node) {
	ds := slices.Clone(n.Drivers)
	slices.Sort(ds)
	for _, d := range ds {
		b.WriteString(d)
		b.WriteByte(0)
	}
	for _, k := range sortedKeys(n.Labels) {
		b.WriteByte(1)
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(n.Labels[k])
	}
}

func (w *working) addSpreadKey(k string) {
	if k == "" {
		return
	}
	if w.spreadKeys == nil {
		w.spreadKeys = make(map[string]bool)
		w.pairs = make(map[string]int32)
		w.spreadAt = make([][]pairCount, len(w.hot))
	}
	w.spreadKeys[k] = true
}

func (w *working) pair(k, v string) int32 {
	s := k + "\x00" + v
	id, ok := w.pairs[s]
	if !ok {
		id = int32(len(w.pairs))
		w.pairs[s] = id
	}
	return id
}

// countLabels adds delta guests with these labels (spreading by spreadBy)
// to the anti-affinity counts at pos.
func (w *working) countLabels(pos int32, labels map[string]string, spreadBy string, delta int32) {
	for k, v := range labels {
		if w.spreadKeys[k] {
			w.pairAt(pos, w.pair(k, v)).labels += delta
		}
	}
	if v, ok := labels[spreadBy]; ok && spreadBy != "" {
		w.pairAt(pos, w.pair(spreadBy, v)).claims += delta
	}
}

// pairAt returns pair's counts at pos, adding them when missing.
func (w *working) pairAt(pos, pair int32) *pairCount {
	at := w.spreadAt[pos]
	for i := range at {
		if at[i].pair == pair {
			return &at[i]
		}
	}
	w.spreadAt[pos] = append(at, pairCount{pair: pair})
	w.hot[pos].pairBits |= pairBit(pair)
	return &w.spreadAt[pos][len(at)]
}

// demandOf fills d for g, reusing d's slices.
func (w *working) demandOf(g *Guest, d *demand) {
	*d = demand{g: g, mem: int64(g.MemoryBytes), cpuset: g.CPUSet, spreadPair: -1, labelPairs: d.labelPairs[:0]}
	d.pin = int64(g.pinCount())
	if d.pin == 0 {
		d.vcpus = int64(g.VCPUs)
	}
	key := g.feasibilityKey()
	cc, cached := w.feasible[key]
	if !cached {
		cc.codes = make([]ReasonCode, len(w.classes))
		accepting := 0
		for c, idx := range w.classes {
			cc.codes[c] = nodeAccepts(&w.nodes[idx], g)
			if cc.codes[c] == ReasonNone {
				cc.accepted = true
				accepting += len(w.classPos[c])
			}
		}
		if n := len(w.hot); !plainScan && cc.accepted && n > minKeyIndexNodes && accepting*fewNodesRatio <= n {
			cc.few = w.keyIndex(cc.codes, accepting)
		}
		w.feasible[key] = cc
	}
	d.class, d.accepted, d.few = cc.codes, cc.accepted, cc.few
	if len(w.spreadKeys) == 0 {
		return
	}
	for k, v := range g.Labels {
		if w.spreadKeys[k] {
			p := w.pair(k, v)
			d.labelPairs = append(d.labelPairs, p)
			d.pairBits |= pairBit(p)
		}
	}
	if v, ok := g.Labels[g.SpreadBy]; ok && g.SpreadBy != "" {
		d.spreadPair = w.pair(g.SpreadBy, v)
		d.pairBits |= pairBit(d.spreadPair)
	}
}

// keyIndex lists the positions of the classes that codes accepts.
func (w *working) keyIndex(codes []ReasonCode, accepting int) *keyIndex {
	k := &keyIndex{pos: make([]int32, 0, accepting), skips: make([][]int32, len(w.allSkips))}
	for c, code := range codes {
		if code == ReasonNone {
			k.pos = append(k.pos, w.classPos[c]...)
		}
	}
	slices.Sort(k.pos)
	return k
}

// skip returns the key's skip list for scan list s, making it on first use.
func (k *keyIndex) skip(s int) []int32 {
	if k.skips[s] == nil {
		k.skips[s] = make([]int32, len(k.pos)+1)
		for i := range k.skips[s] {
			k.skips[s][i] = int32(i)
		}
	}
	return k.skips[s]
}

// openIn returns the first index at or after i in the key's list whose
// position is open in scan, closing in skip the ones it finds closed there.
// It reads scan, not the nodes' closed bits: most entries it crosses are
// closed, and a scan list is a sixteenth the size of the nodes' lines, so
// it is far likelier to be in cache.
func (k *keyIndex) openIn(skip, scan []int32, i int) int {
	for {
		r := open(skip, i)
		if r == len(k.pos) || scan[k.pos[r]] == k.pos[r] {
			return r
		}
		skip[r] = int32(r + 1)
		i = r + 1
	}
}

// nodeAccepts checks the requirements a node class decides: driver and
// constraints. The first failing one is returned.
func nodeAccepts(n *Node, g *Guest) ReasonCode {
	if !slices.Contains(n.Drivers, g.Driver) {
		return ReasonDriver
	}
	for _, c := range g.Constraints {
		if !c.matches(n.Labels) {
			return ReasonConstraint
		}
	}
	return ReasonNone
}

// fits is the hot feasibility check; it must agree with explain.
func (w *working) fits(pos int, d *demand) bool {
	h := &w.hot[pos]
	if h.class < 0 || d.class[h.class] != ReasonNone || d.mem > h.memFree {
		return false
	}
	if d.pin == 0 {
		if d.vcpus > h.sharedFree {
			return false
		}
	} else if d.pin > h.freePin {
		return false
	} else if code, _ := w.pinCheck(pos, d); code != ReasonNone {
		return false
	}
	return !d.spreading() || !w.spreadConflict(int32(pos), d)
}

// pinCheck checks a pinned guest's CPUs at pos: an explicit cpuset's CPUs
// must be on the node, outside the reserve and free; the count must be free;
// and the shared pool, shrunk by the pinned CPUs, must still hold the shared
// vCPUs already on it.
func (w *working) pinCheck(pos int, d *demand) (ReasonCode, int) {
	c, h := &w.cold[pos], &w.hot[pos]
	n := c.node
	for _, cpu := range d.cpuset {
		i, ok := slices.BinarySearch(n.CPUs, cpu)
		switch {
		case !ok:
			return ReasonCPUMissing, cpu
		case i < n.ReservedCPUs:
			return ReasonCPUReserved, cpu
		case c.taken[i/64]&(1<<(i%64)) != 0:
			return ReasonCPUTaken, cpu
		}
	}
	if d.pin > h.freePin {
		return ReasonPinnedCPUs, 0
	}
	if h.shared() > overcommitted(h.alloc-h.pinned()-d.pin, w.cfg.CPUOvercommit) {
		return ReasonSharedCPUs, 0
	}
	return ReasonNone, 0
}

func (w *working) spreadConflict(pos int32, d *demand) bool {
	if w.hot[pos].pairBits&d.pairBits == 0 {
		return false
	}
	for _, c := range w.spreadAt[pos] {
		if c.pair == d.spreadPair && c.labels > 0 {
			return true
		}
		if c.claims > 0 && slices.Contains(d.labelPairs, c.pair) {
			return true
		}
	}
	return false
}

// commit places d at pos and returns the exclusive CPUs it took.
func (w *working) commit(pos int, d *demand, placement int) CPUSet {
	h := &w.hot[pos]
	h.memFree -= d.mem
	var cpus CPUSet
	if d.pin > 0 {
		c := &w.cold[pos]
		n := c.node
		if len(d.cpuset) > 0 {
			cpus = d.cpuset
			for _, cpu := range cpus {
				i, _ := slices.BinarySearch(n.CPUs, cpu)
				c.taken[i/64] |= 1 << (i % 64)
			}
		} else {
			cpus = make(CPUSet, 0, d.pin)
			for i := n.ReservedCPUs; i < len(n.CPUs) && int64(len(cpus)) < d.pin; i++ {
				if c.taken[i/64]&(1<<(i%64)) == 0 {
					c.taken[i/64] |= 1 << (i % 64)
					cpus = append(cpus, n.CPUs[i])
				}
			}
		}
		shared := h.shared()
		h.freePin -= d.pin
		h.sharedCap = overcommitted(h.alloc-h.pinned(), w.cfg.CPUOvercommit)
		h.sharedFree = h.sharedCap - shared
	} else {
		h.sharedFree -= d.vcpus
	}
	if d.spreading() {
		w.countLabels(int32(pos), d.g.Labels, d.g.SpreadBy, 1)
	}
	if d.pin > 0 || d.spreading() {
		w.planned[pos] = append(w.planned[pos], int32(placement))
	}
	w.closeIfFull(pos)
	return cpus
}

// permutation returns a seeded Fisher–Yates shuffle of 0..n-1. It uses its
// own generator (splitmix64) so that plans, and the golden files that pin
// them, do not change with the Go release.
func permutation(n int, seed uint64) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = int32(i)
	}
	s := seed
	for i := n - 1; i > 0; i-- {
		s += 0x9e3779b97f4a7c15
		z := s
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		j, _ := bits.Mul64(z, uint64(i+1))
		p[i], p[j] = p[j], p[i]
	}
	return p
}
