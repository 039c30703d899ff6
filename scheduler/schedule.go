package scheduler

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"
)

// Schedule decides where the pending guests go. It is a pure function: no
// I/O, no clock, no global state, and randomness only from seed, so the same
// arguments always return the same Plan. now is only copied into the plan.
//
// Guests are considered in the order given (the caller decides priority),
// each against the snapshot plus the placements made before it in this plan.
// For each guest, nodes are visited in an order shuffled by seed and checked
// for feasibility (up and eligible, driver, constraints, anti-affinity,
// exclusive CPUs, memory, shared vCPUs); up to Config.CandidateLimit feasible
// nodes are ranked and the best wins, ties going to the earlier node in the
// seeded order. Bin-pack scans from the start of the order for every guest,
// so it keeps filling the same nodes; spread continues where the previous
// guest stopped, so it keeps moving on. A guest becomes a Failure only after
// every node was checked: a guest that fits anywhere is always placed.
//
// The cost of one placement does not grow with the cluster: nodes full for
// a guest's kind and size are skipped in one step, a guest that few nodes
// accept (a rack constraint, say) scans only those, and a guest that no
// node class accepts is explained per class, not per node. Nor, as far as
// memory allows, does it grow with the size of the state: a visit to a
// node reads one cache line (hotNode) and touches no map, and nothing is
// looked up per guest in a structure as large as the pending list.
//
// The error is non-nil only for a nil snapshot or an invalid cfg. A guest
// that is itself invalid, pending twice, or already allocated becomes a
// Failure with Err set, and the other guests are still scheduled.
func Schedule(snap *Snapshot, pending []Guest, cfg Config, now time.Time, seed uint64) (Plan, error) {
	if snap == nil {
		return Plan{}, fmt.Errorf("%w: Schedule was given a nil snapshot", ErrInvalidSnapshot)
	}
	if err := cfg.Validate(); err != nil {
		return Plan{}, err
	}
	plan := Plan{
		Now:        now,
		Seed:       seed,
		Algorithm:  cfg.Algorithm,
		Placements: make([]Placement, 0, len(pending)),
	}
	w := newWorking(snap.nodes, pending, cfg, seed)
	w.plan = &plan
	names := newPendingNames(pending)
	at := make([]int32, 0, len(pending)) // position of each placement
	var d demand
	for i := range pending {
		g := &pending[i]
		if err := guestError(snap, g, &names); err != nil {
			plan.Failures = append(plan.Failures, Failure{Guest: g.Name, Err: err, Nodes: len(snap.nodes)})
			plan.Summary.Invalid++
			continue
		}
		w.demandOf(g, &d)
		pos, score, ranked := w.preferred(g.Prefer, &d)
		if pos < 0 {
			pos, score, ranked = w.pick(&d)
		}
		if pos < 0 {
			plan.Failures = append(plan.Failures, w.failure(&d))
			continue
		}
		cpus := w.commit(pos, &d, len(plan.Placements))
		plan.Placements = append(plan.Placements, Placement{
			Guest:  *g,
			CPUs:   cpus,
			Score:  score,
			Ranked: ranked,
		})
		at = append(at, int32(pos))
	}
	// The node IDs, filled in after the loop: one at a time, each would
	// wait on a cache miss in a large cluster (the scan reads hot, not
	// cold); in one loop of independent loads the misses overlap.
	for i, pos := range at {
		plan.Placements[i].Node = w.cold[pos].id
	}
	plan.Summary.Guests = len(pending)
	plan.Summary.Placed = len(plan.Placements)
	plan.Summary.Pending = len(plan.Failures)
	return plan, nil
}

func guestError(snap *Snapshot, g *Guest, names *pendingNames) error {
	if err := snap.ValidateGuest(g); err != nil {
		return err
	}
	if names.duplicate(g.Name) {
		return fmt.Errorf("%w: guest %q appears more than once in the pending list; it is scheduled once", ErrDuplicateGuest, g.Name)
	}
	if node, ok := snap.NodeOf(g.Name); ok {
		return fmt.Errorf("%w: guest %q is already allocated on node %q; a guest is placed again only after its allocation is removed", ErrAlreadyPlaced, g.Name, node)
	}
	return nil
}

// pick returns the position of the best feasible node, its score and how
// many feasible nodes were ranked; -1 when no node is feasible, which it
// reports only after checking every node open at the guest's scan level
// (closed ones cannot take it, see closeIfFull).
func (w *working) pick(d *demand) (best int, bestScore float64, ranked int) {
	n := len(w.hot)
	limit := w.cfg.CandidateLimit
	if limit <= 0 {
		limit = n
	}
	start := 0
	if w.cfg.Algorithm == Spread {
		start = w.cursor
	}
	l := w.level(d)
	s := l
	if k, j := l/len(w.cpuT), l%len(w.cpuT); plainScan {
	} else if j == 0 && d.pin > 0 {
		s = len(w.skips) + len(w.memT) + k
	} else if j == 0 {
		s = len(w.skips) + k
	}
	// The scan walks indices into list, the positions that may take the
	// guest: every position (list nil, scan list s), or the key's few (see
	// keyIndex, and skip, its list for s).
	m, s0, list, skip := n, start, []int32(nil), []int32(nil)
	if d.few != nil {
		list, skip = d.few.pos, d.few.skip(s)
		m = len(list)
		if start > 0 {
			s0 = startIndex(list, start, n)
		}
	}
	next := func(i int) int {
		if list == nil {
			return w.openAt(s, i)
		}
		return d.few.openIn(skip, w.allSkips[s], i)
	}
	best, last := -1, -1
	i, wrapped := next(s0), false
	for (d.accepted || plainScan) && ranked < limit {
		if i >= m {
			if wrapped || start == 0 {
				break
			}
			i, wrapped = next(0), true
			continue
		}
		if wrapped && i >= s0 {
			break
		}
		pos := i
		if list != nil {
			pos = int(list[i])
		}
		if w.fits(pos, d) {
			ranked++
			last = pos
			if s := w.score(pos, d); best < 0 || s > bestScore {
				best, bestScore = pos, s
			}
		}
		i = next(i + 1)
	}
	// The cursor lands where a scan over the level's skips would have
	// stopped: after the last ranked node when the limit was reached,
	// otherwise back at the start (the end, for a scan from 0). scan
	// closes more nodes than skips, never a feasible one, so the nodes
	// ranked are the same either way.
	var pos int
	switch {
	case plainScan:
		pos = i // where the scan over the level's skips stopped
	case ranked == limit:
		pos = w.openAt(l, last+1)
	case start == 0:
		pos = n
	default:
		pos = w.openAt(l, start)
	}
	if pos >= n {
		pos = 0
	}
	w.cursor = pos
	return best, bestScore, ranked
}

// startIndex returns the index of the first position at or after start in
// list, which is ascending and holds positions below n. The positions of a
// key's nodes are spread evenly by the seeded permutation, so the search
// starts where start falls in proportion and gallops from there: a few
// reads near the answer instead of a binary search's reads across the list.
func startIndex(list []int32, start, n int) int {
	m := len(list)
	if m == 0 {
		return 0
	}
	// The answer stays in [lo, hi], with list[lo-1] < start <= list[hi]
	// (hi == m meaning none is).
	lo, hi := 0, m
	if g := min(int(int64(start)*int64(m)/int64(n)), m-1); list[g] < int32(start) {
		lo = g + 1
		for step := 1; ; step *= 2 {
			if p := lo + step - 1; p >= m {
				break
			} else if list[p] >= int32(start) {
				hi = p
				break
			} else {
				lo = p + 1
			}
		}
	} else {
		hi = g
		for step := 1; ; step *= 2 {
			if p := hi - step; p < 0 {
				break
			} else if list[p] < int32(start) {
				lo = p + 1
				break
			} else {
				hi = p
			}
		}
	}
	i, _ := slices.BinarySearch(list[lo:hi], int32(start))
	return lo + i
}

// preferred returns the position of node id when it is feasible for d,
// with its score, and -1 otherwise.
func (w *working) preferred(id string, d *demand) (pos int, score float64, ranked int) {
	if id == "" {
		return -1, 0, 0
	}
	i, ok := slices.BinarySearchFunc(w.nodes, id, func(n Node, id string) int { return cmp.Compare(n.ID, id) })
	if !ok {
		return -1, 0, 0
	}
	pos = int(w.posOf[i])
	if w.hot[pos].class < 0 || !w.fits(pos, d) {
		return -1, 0, 0
	}
	return pos, w.score(pos, d), 1
}

// levels sets the scan-level thresholds from the pending guests: memory
// doubling from the smallest request, shared vCPUs doubling from the
// smallest unpinned request; and opens every node at every level.
func (w *working) levels(pending []Guest) {
	minMem, maxMem := int64(math.MaxInt64), int64(0)
	minShared, maxShared := int64(math.MaxInt64), int64(0)
	w.minPin = math.MaxInt64
	for i := range pending {
		g := &pending[i]
		if m := int64(g.MemoryBytes); m > 0 {
			minMem, maxMem = min(minMem, m), max(maxMem, m)
		}
		if pin := int64(g.pinCount()); pin > 0 {
			w.minPin = min(w.minPin, pin)
		} else if v := int64(g.VCPUs); v > 0 {
			minShared, maxShared = min(minShared, v), max(maxShared, v)
		}
	}
	// With no guest of a kind, min stays MaxInt64 > max: one level, and a
	// threshold nothing meets, which is right since no such guest scans.
	w.memT = []int64{minMem}
	for t := minMem; minMem <= maxMem && t <= maxMem/2 && len(w.memT) < maxMemLevels; {
		t *= 2
		w.memT = append(w.memT, t)
	}
	w.cpuT = []int64{minShared}
	for t := minShared; minShared <= maxShared && t <= maxShared/2 && len(w.cpuT) < maxCPULevels; {
		t *= 2
		w.cpuT = append(w.cpuT, t)
	}
	n := len(w.hot)
	levels := len(w.memT) * len(w.cpuT)
	all := make([][]int32, levels+2*len(w.memT))
	w.allSkips = all
	w.skips, w.sharedSkips, w.pinSkips = all[:levels], all[levels:levels+len(w.memT)], all[levels+len(w.memT):]
	ids := make([]int32, len(all)*(n+1))
	for l := range all {
		all[l], ids = ids[:n+1:n+1], ids[n+1:]
		for i := range all[l] {
			all[l][i] = int32(i)
		}
	}
}

// level is the scan level for d: the highest thresholds d meets. A pinned
// guest uses shared level 0, whose rule accounts for exclusive CPUs.
func (w *working) level(d *demand) int {
	k := 0
	for k+1 < len(w.memT) && w.memT[k+1] <= d.mem {
		k++
	}
	j := 0
	for d.pin == 0 && j+1 < len(w.cpuT) && w.cpuT[j+1] <= d.vcpus {
		j++
	}
	return k*len(w.cpuT) + j
}

// openAt is open(w.allSkips[s], p), answered from the node's own line when
// p is open: the visit reads that line anyway, and the skip list is then
// read only to cross closed nodes, not at every step.
func (w *working) openAt(s, p int) int {
	if p < len(w.hot) && w.hot[p].closed&(1<<s) == 0 {
		return p
	}
	return open(w.allSkips[s], p)
}

// open returns the first open position at or after p in skip, or the end.
// skip is a union-find over closed positions with path compression, so long
// runs of full nodes cost nearly nothing to cross.
func open(skip []int32, p int) int {
	r := p
	for skip[r] != int32(r) {
		r = int(skip[r])
	}
	for p != r {
		next := int(skip[p])
		skip[p] = int32(r)
		p = next
	}
	return r
}

// closeIfFull closes pos at every level whose guests can no longer fit
// there: a node not up and eligible, or with less memory left than the
// level's threshold, or (level j = 0) with neither shared vCPUs nor exclusive
// CPUs for the smallest pending guest, or (j > 0) fewer shared vCPUs than
// the level's threshold. Capacity only shrinks within a plan, so a closed
// node stays infeasible for every guest that scans that level.
func (w *working) closeIfFull(pos int) {
	h := &w.hot[pos]
	levels := len(w.skips)
	for k, mt := range w.memT {
		for j, ct := range w.cpuT {
			full := h.class < 0 || h.memFree < mt
			if j == 0 {
				full = full || h.sharedFree < ct && h.freePin < w.minPin
			} else {
				full = full || h.sharedFree < ct
			}
			if full {
				w.closeAt(k*len(w.cpuT)+j, pos)
			}
		}
		gone := h.class < 0 || h.memFree < mt
		if gone || h.sharedFree < w.cpuT[0] {
			w.closeAt(levels+k, pos)
		}
		if gone || h.freePin < w.minPin || h.shared() > overcommitted(h.alloc-h.pinned()-w.minPin, w.cfg.CPUOvercommit) {
			w.closeAt(levels+len(w.memT)+k, pos)
		}
	}
}

// closeAt closes pos in scan list allSkips[s], if it is open.
func (w *working) closeAt(s, pos int) {
	if h := &w.hot[pos]; h.closed&(1<<s) == 0 {
		h.closed |= 1 << s
		w.allSkips[s][pos] = int32(pos + 1)
	}
}

// score ranks a feasible node in [0,1], higher is better, with Nomad's
// formula over the free fraction of CPU and memory after the placement:
// bin-pack scores 20 - (10^freeCPU + 10^freeMem), spread the opposite, both
// normalised by 18. Pinned CPUs count fully, shared vCPUs by their share of
// the overcommitted capacity.
func (w *working) score(pos int, d *demand) float64 {
	h := &w.hot[pos]
	mem := float64(h.memUsed()+d.mem) / float64(h.memCap)
	shared := float64(h.shared()+d.vcpus) / w.cfg.CPUOvercommit
	cpu := (float64(h.pinned()+d.pin) + shared) / float64(h.alloc)
	total := math.Exp((1-min(cpu, 1))*math.Ln10) + math.Exp((1-min(mem, 1))*math.Ln10)
	if w.cfg.Algorithm == Spread {
		return (total - 2) / 18
	}
	return (20 - total) / 18
}

// explain says why pos cannot take d, checking in a fixed order so that
// reasons are stable: status, eligibility, driver, constraints,
// anti-affinity, exclusive CPUs, memory, shared vCPUs. It must agree with
// fits: ReasonNone exactly when fits is true.
// With detail false, only Code, Need and Free are filled in: enough to count,
// and free of allocations.
func (w *working) explain(pos int, d *demand, detail bool) NodeReason {
	c, h := &w.cold[pos], &w.hot[pos]
	n, g := c.node, d.g
	r := NodeReason{Node: n.ID, Code: statusReason(n)}
	switch {
	case r.Code != ReasonNone:
	case d.class[h.class] == ReasonDriver:
		r.Code, r.Subject = ReasonDriver, g.Driver
	case d.class[h.class] == ReasonConstraint:
		r.Code = ReasonConstraint
		for _, k := range g.Constraints {
			if detail && !k.matches(n.Labels) {
				r.Code, r.Subject, r.Other = ReasonConstraint, k.String(), "no label "+k.Key
				if v, ok := n.Labels[k.Key]; ok {
					r.Other = k.Key + "=" + v
				}
				break
			}
		}
	case d.spreading() && w.spreadConflict(int32(pos), d):
		r.Code = ReasonSpread
		if detail {
			r.Subject, r.Other = w.spreadWitness(pos, g)
		}
	case d.pin > 0:
		code, cpu := w.pinCheck(pos, d)
		r.Code = code
		switch code {
		case ReasonCPUMissing, ReasonCPUReserved:
			r.CPU, r.Subject = cpu, d.cpuset.String()
		case ReasonCPUTaken:
			r.CPU, r.Subject = cpu, d.cpuset.String()
			if detail {
				r.Other = w.cpuHolder(pos, cpu)
			}
		case ReasonPinnedCPUs:
			r.Need, r.Free = d.pin, h.freePin
		case ReasonSharedCPUs:
			r.Need, r.Free = h.shared(), overcommitted(h.alloc-h.pinned()-d.pin, w.cfg.CPUOvercommit)
		}
	}
	if r.Code != ReasonNone {
		return r
	}
	switch {
	case d.mem > h.memFree:
		r.Code, r.Need, r.Free = ReasonMemory, d.mem, h.memFree
	case d.pin == 0 && d.vcpus > h.sharedFree:
		r.Code, r.Need, r.Free = ReasonCPU, d.vcpus, h.sharedFree
	}
	return r
}

// failure explains every node for a guest no node took: the first
// MaxReasons nodes in ID order one by one, and for the counts whole classes
// at once where the class refuses the guest, so that a guest no class
// accepts costs the same on any number of nodes.
func (w *working) failure(d *demand) Failure {
	f := Failure{Guest: d.g.Name, Nodes: len(w.nodes)}
	counts := w.byStatus
	for class, code := range d.class {
		if code != ReasonNone {
			counts[code] += len(w.classPos[class])
			continue
		}
		for _, pos := range w.classPos[class] {
			r := w.explain(int(pos), d, false)
			if r.Code == ReasonNone {
				panic("scheduler: node " + r.Node + " fits guest " + d.g.Name + " but was not picked; fits and explain disagree")
			}
			counts[r.Code]++
		}
	}
	listed := len(w.nodes)
	if w.cfg.MaxReasons > 0 {
		listed = min(listed, w.cfg.MaxReasons)
	}
	for idx := range listed {
		f.Reasons = append(f.Reasons, w.explain(int(w.posOf[idx]), d, true))
	}
	for code, n := range counts {
		if n > 0 {
			f.Counts = append(f.Counts, ReasonCount{Code: ReasonCode(code), Nodes: n})
		}
	}
	slices.SortStableFunc(f.Counts, func(a, b ReasonCount) int { return cmp.Compare(b.Nodes, a.Nodes) })
	return f
}

// statusReason is why a node takes no guest whatever it asks, by its
// status and eligibility; ReasonNone when it is up and eligible.
func statusReason(n *Node) ReasonCode {
	switch {
	case n.Status == NodeDown:
		return ReasonDown
	case n.Status != NodeUp:
		return ReasonStatusUnknown
	case n.Eligibility == Draining:
		return ReasonDraining
	case n.Eligibility != Eligible:
		return ReasonIneligible
	}
	return ReasonNone
}

// holders calls fn for every guest at pos that reasons may have to name:
// the snapshot's allocations and this plan's pinned or labelled placements.
func (w *working) holders(pos int, fn func(name string, labels map[string]string, spreadBy string, cpus CPUSet)) {
	for _, a := range w.cold[pos].node.Allocations {
		fn(a.Guest, a.Labels, a.SpreadBy, a.CPUs)
	}
	for _, i := range w.planned[pos] {
		p := &w.plan.Placements[i]
		fn(p.Guest.Name, p.Guest.Labels, p.Guest.SpreadBy, p.CPUs)
	}
}

func (w *working) cpuHolder(pos, cpu int) string {
	holder := ""
	w.holders(pos, func(name string, _ map[string]string, _ string, cpus CPUSet) {
		if cpus.Contains(cpu) {
			holder = name
		}
	})
	return holder
}

// spreadWitness names the label pair and the guest (least by name) that
// keeps g off pos.
func (w *working) spreadWitness(pos int, g *Guest) (pair, guest string) {
	w.holders(pos, func(name string, labels map[string]string, spreadBy string, _ CPUSet) {
		k := ""
		switch {
		case g.SpreadBy != "" && labels[g.SpreadBy] == g.Labels[g.SpreadBy] && hasKey(labels, g.SpreadBy):
			k = g.SpreadBy
		case spreadBy != "" && hasKey(g.Labels, spreadBy) && labels[spreadBy] == g.Labels[spreadBy]:
			k = spreadBy
		default:
			return
		}
		if guest == "" || name < guest {
			pair, guest = k+"="+labels[k], name
		}
	})
	return pair, guest
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}
