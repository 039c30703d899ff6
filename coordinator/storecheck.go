package coordinator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// ErrDamaged marks a bbolt file whose structure is broken: torn by a crash
// or a copy cut short, or overwritten. What was found follows it.
var ErrDamaged = errors.New("corral: damaged file")

// checkBoltFile walks the bbolt file at path the way bbolt would read it,
// but with ordinary reads and bounds checks instead of a memory map, so a
// torn or corrupt file yields an error instead of a panic inside bbolt or a
// fault on a page past the end of the file (bbolt's own Check cannot do
// that: it walks the mapped file and, for a file without a synced
// freelist, panics on another goroutine). It checks the meta pages, every
// page reachable from the root (type, id, bounds, single reference, key
// order) and the freelist, and calls leaf, when not nil, for every
// key/value pair in a bucket whose path is one name long (the top-level
// buckets), so the caller can check its own records.
//
// A missing or empty file is not damaged: bbolt creates it.
func checkBoltFile(path string, leaf func(bucket, k, v []byte) error) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return nil
	}
	c := &boltChecker{f: f, size: fi.Size(), leaf: leaf, seen: make(map[uint64]bool)}
	if err := c.check(); err != nil {
		return fmt.Errorf("%w: %s (%d bytes): %v", ErrDamaged, path, fi.Size(), err)
	}
	return nil
}

// bbolt's on-disk format (go.etcd.io/bbolt/internal/common), little-endian.
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	boltPageHeader   = 16 // id u64, flags u16, count u16, overflow u32
	boltElement      = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	boltBranchPage   = 0x01
	boltLeafPage     = 0x02
	boltMetaPage     = 0x04
	boltFreelistPage = 0x10
	boltBucketLeaf   = 0x01
	boltNoFreelist   = ^uint64(0)
	boltMinPageSize  = 512
	boltMaxPageSize  = 1 << 20
)

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64 // high water mark
	txid     uint64
}

type boltChecker struct {
	f        *os.File
	size     int64
	leaf     func(bucket, k, v []byte) error
	meta     boltMeta
	seen     map[uint64]bool
	maxPages int // pages left to visit: bounds the walk on a cyclic file
}

func (c *boltChecker) check() error {
	m0, err0 := c.readMeta(0, 0)
	var m1 boltMeta
	var err1 error
	if err0 == nil {
		m1, err1 = c.readMeta(1, int64(m0.pageSize))
	} else {
		// The first meta page is unreadable: find the second one at each
		// plausible page size, as bbolt does.
		err1 = err0
		for ps := int64(boltMinPageSize); ps <= boltMaxPageSize && err1 != nil; ps *= 2 {
			m1, err1 = c.readMeta(1, ps)
		}
	}
	switch {
	case err0 != nil && err1 != nil:
		return fmt.Errorf("no valid meta page: page 0: %v; page 1: %v", err0, err1)
	case err0 != nil:
		c.meta = m1
	case err1 != nil:
		c.meta = m0
	case m1.txid > m0.txid:
		c.meta = m1
	default:
		c.meta = m0
	}
	ps := int64(c.meta.pageSize)
	if c.meta.pgid < 2 {
		return fmt.Errorf("meta: high water mark %d is below the meta pages", c.meta.pgid)
	}
	// bbolt grows the file before it writes past the end, and never
	// shrinks it: a file shorter than its high water mark was cut.
	if c.meta.pgid > uint64(c.size/ps) {
		return fmt.Errorf("the file is cut short: its meta page (txid %d) says it holds %d pages of %d bytes", c.meta.txid, c.meta.pgid, ps)
	}
	c.maxPages = int(c.meta.pgid)
	c.seen[0], c.seen[1] = true, true
	if err := c.walkBucket(nil, c.meta.root, nil, 0); err != nil {
		return err
	}
	if c.meta.freelist != boltNoFreelist {
		if err := c.checkFreelist(); err != nil {
			return err
		}
	}
	return nil
}

// readMeta reads meta page id, with the file's page size ps when known.
func (c *boltChecker) readMeta(id, ps int64) (boltMeta, error) {
	buf := make([]byte, boltPageHeader+64)
	n, err := c.f.ReadAt(buf, id*ps)
	if n < len(buf) {
		if err == nil || err == io.EOF {
			err = errors.New("file ends inside it")
		}
		return boltMeta{}, err
	}
	le := binary.LittleEndian
	if le.Uint16(buf[8:]) != boltMetaPage {
		return boltMeta{}, fmt.Errorf("not a meta page (flags %#x)", le.Uint16(buf[8:]))
	}
	b := buf[boltPageHeader:]
	if le.Uint32(b[0:]) != boltMagic {
		return boltMeta{}, errors.New("bad magic")
	}
	if v := le.Uint32(b[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("version %d, want %d", v, boltVersion)
	}
	h := fnv.New64a()
	h.Write(b[:56])
	if h.Sum64() != le.Uint64(b[56:]) {
		return boltMeta{}, errors.New("checksum mismatch")
	}
	m := boltMeta{pageSize: le.Uint32(b[8:]), root: le.Uint64(b[16:]), freelist: le.Uint64(b[32:]),
		pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}
	if m.pageSize < boltMinPageSize || m.pageSize > boltMaxPageSize || m.pageSize&(m.pageSize-1) != 0 {
		return boltMeta{}, fmt.Errorf("page size %d", m.pageSize)
	}
	if ps != 0 && int64(m.pageSize) != ps {
		return boltMeta{}, fmt.Errorf("page size %d, the other meta page says %d", m.pageSize, ps)
	}
	return m, nil
}

// page reads page id with its overflow, checking it lies below the high
// water mark and inside the file and is referenced once.
func (c *boltChecker) page(id uint64) ([]byte, error) {
	if id < 2 || id >= c.meta.pgid {
		return nil, fmt.Errorf("page %d: outside 2-%d", id, c.meta.pgid-1)
	}
	if c.seen[id] {
		return nil, fmt.Errorf("page %d: referenced twice", id)
	}
	if c.maxPages--; c.maxPages < 0 {
		return nil, errors.New("more pages referenced than the file holds")
	}
	ps := int64(c.meta.pageSize)
	hdr := make([]byte, boltPageHeader)
	if n, _ := c.f.ReadAt(hdr, int64(id)*ps); n < len(hdr) {
		return nil, fmt.Errorf("page %d: past the end of the file (the file was cut at byte %d)", id, c.size)
	}
	le := binary.LittleEndian
	if got := le.Uint64(hdr); got != id {
		return nil, fmt.Errorf("page %d: header says page %d", id, got)
	}
	overflow := uint64(le.Uint32(hdr[12:]))
	if id+overflow >= c.meta.pgid {
		return nil, fmt.Errorf("page %d: overflow %d runs past the high water mark %d", id, overflow, c.meta.pgid)
	}
	end := int64(id+overflow+1) * ps
	if end > c.size {
		return nil, fmt.Errorf("page %d: ends at byte %d, past the end of the file (%d bytes: cut short)", id, end, c.size)
	}
	for i := id; i <= id+overflow; i++ {
		if c.seen[i] {
			return nil, fmt.Errorf("page %d: referenced twice", i)
		}
		c.seen[i] = true
	}
	buf := make([]byte, end-int64(id)*ps)
	if _, err := c.f.ReadAt(buf, int64(id)*ps); err != nil {
		return nil, fmt.Errorf("page %d: %v", id, err)
	}
	return buf, nil
}

// walkBucket checks the tree of a bucket: rooted at page root, or inline
// when root is 0. name is the bucket's path, depth its length.
func (c *boltChecker) walkBucket(name []byte, root uint64, inline []byte, depth int) error {
	if root == 0 {
		if len(inline) < boltPageHeader {
			return fmt.Errorf("bucket %q: inline page is %d bytes", name, len(inline))
		}
		if f := binary.LittleEndian.Uint16(inline[8:]); f != boltLeafPage {
			return fmt.Errorf("bucket %q: inline page has flags %#x, want a leaf", name, f)
		}
		return c.walkPage(name, inline, "inline page", nil, nil, depth)
	}
	p, err := c.page(root)
	if err != nil {
		return fmt.Errorf("bucket %q: %v", name, err)
	}
	return c.walkPage(name, p, fmt.Sprintf("page %d", root), nil, nil, depth)
}

// walkPage checks one branch or leaf page p of bucket name, whose keys must
// lie in [lo, hi) (nil: unbounded), and what it points to.
func (c *boltChecker) walkPage(name, p []byte, what string, lo, hi []byte, depth int) error {
	le := binary.LittleEndian
	flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
	if flags != boltBranchPage && flags != boltLeafPage {
		return fmt.Errorf("bucket %q: %s: flags %#x, want a branch or leaf page", name, what, flags)
	}
	if boltPageHeader+count*boltElement > len(p) {
		return fmt.Errorf("bucket %q: %s: %d elements do not fit in %d bytes", name, what, count, len(p))
	}
	if flags == boltBranchPage && count == 0 {
		return fmt.Errorf("bucket %q: %s: empty branch page", name, what)
	}
	field := func(i, at int, size uint64) ([]byte, error) {
		start := uint64(boltPageHeader + i*boltElement + at)
		if start+size > uint64(len(p)) {
			return nil, fmt.Errorf("bucket %q: %s: element %d points past the page", name, what, i)
		}
		return p[start : start+size], nil
	}
	var prev []byte
	for i := 0; i < count; i++ {
		e := p[boltPageHeader+i*boltElement:]
		var k, v []byte
		var err error
		if flags == boltBranchPage {
			k, err = field(i, int(le.Uint32(e[0:])), uint64(le.Uint32(e[4:])))
		} else {
			kv, ferr := field(i, int(le.Uint32(e[4:])), uint64(le.Uint32(e[8:]))+uint64(le.Uint32(e[12:])))
			err = ferr
			if err == nil {
				k, v = kv[:le.Uint32(e[8:])], kv[le.Uint32(e[8:]):]
			}
		}
		if err != nil {
			return err
		}
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			return fmt.Errorf("bucket %q: %s: keys out of order at element %d", name, what, i)
		}
		if (lo != nil && bytes.Compare(k, lo) < 0) || (hi != nil && bytes.Compare(k, hi) >= 0) {
			return fmt.Errorf("bucket %q: %s: key %x outside its parent's range", name, what, k)
		}
		prev = k
		if flags == boltBranchPage {
			child := le.Uint64(e[8:])
			var next []byte
			if i+1 < count {
				n := p[boltPageHeader+(i+1)*boltElement:]
				if next, err = field(i+1, int(le.Uint32(n[0:])), uint64(le.Uint32(n[4:]))); err != nil {
					return err
				}
			} else {
				next = hi
			}
			cp, err := c.page(child)
			if err != nil {
				return fmt.Errorf("bucket %q: %s: %v", name, what, err)
			}
			if err := c.walkPage(name, cp, fmt.Sprintf("page %d", child), k, next, depth); err != nil {
				return err
			}
			continue
		}
		if le.Uint32(e[0:])&boltBucketLeaf != 0 {
			if len(v) < 16 {
				return fmt.Errorf("bucket %q: %s: sub-bucket %q has a %d-byte header", name, what, k, len(v))
			}
			sub := append([]byte(nil), name...)
			if len(sub) > 0 {
				sub = append(sub, '/')
			}
			sub = append(sub, k...)
			if err := c.walkBucket(sub, le.Uint64(v), v[16:], depth+1); err != nil {
				return err
			}
			continue
		}
		if depth == 1 && c.leaf != nil {
			if err := c.leaf(name, k, v); err != nil {
				return fmt.Errorf("bucket %q: key %x: %v", name, k, err)
			}
		}
	}
	return nil
}

func (c *boltChecker) checkFreelist() error {
	id := c.meta.freelist
	p, err := c.page(id)
	if err != nil {
		return fmt.Errorf("freelist: %v", err)
	}
	le := binary.LittleEndian
	if f := le.Uint16(p[8:]); f != boltFreelistPage {
		return fmt.Errorf("freelist: page %d has flags %#x", id, f)
	}
	start, count := uint64(0), uint64(le.Uint16(p[10:]))
	if count == 0xFFFF {
		if len(p) < boltPageHeader+8 {
			return errors.New("freelist: short page")
		}
		start, count = 1, le.Uint64(p[boltPageHeader:])
	}
	if boltPageHeader+(start+count)*8 > uint64(len(p)) {
		return fmt.Errorf("freelist: %d ids do not fit in page %d", count, id)
	}
	for i := start; i < start+count; i++ {
		fid := le.Uint64(p[boltPageHeader+i*8:])
		if fid < 2 || fid >= c.meta.pgid {
			return fmt.Errorf("freelist: page %d is outside 2-%d", fid, c.meta.pgid-1)
		}
		if c.seen[fid] {
			return fmt.Errorf("freelist: page %d is free and also in use or listed twice", fid)
		}
		c.seen[fid] = true
	}
	return nil
}

// openBoltGuarded opens a bbolt file that checkBoltFile passed, turning a
// panic or a memory fault inside bbolt (a page the check could not foresee)
// into an error wrapping ErrDamaged. It guards only this goroutine: bbolt's
// own goroutines are kept off damaged pages by the check.
func openBoltGuarded(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %s: bbolt failed reading it: %v", ErrDamaged, path, r)
		}
	}()
	return bolt.Open(path, 0o600, opts)
}

// checkStoreFile checks an event store file: its bbolt structure, and that
// its records are what Store writes: events keyed by their index, dense
// from the first to the last index the meta bucket names, each a JSON
// object that starts with its own index; checkpoints keyed by index, each
// JSON.
func checkStoreFile(path string) error {
	var (
		firstKey, lastKey, count uint64
		metaFirst, metaLast      []byte
	)
	err := checkBoltFile(path, func(bucket, k, v []byte) error {
		switch string(bucket) {
		case string(bucketEvents):
			if len(k) != 8 {
				return fmt.Errorf("event key is %d bytes, want 8", len(k))
			}
			idx := binary.BigEndian.Uint64(k)
			if !bytes.HasPrefix(v, []byte(fmt.Sprintf(`{"index":%d,`, idx))) || !json.Valid(v) {
				return fmt.Errorf("event %d is not the JSON of event %d", idx, idx)
			}
			if count == 0 {
				firstKey = idx
			}
			lastKey = idx
			count++
		case string(bucketByGuest), string(bucketByNode):
			if len(k) < 10 || k[len(k)-9] != 0 || len(v) != 0 {
				return errors.New("index entry is not a name, a 0 byte and an index")
			}
		case string(bucketCheckpoints):
			if len(k) != 8 || !json.Valid(v) {
				return errors.New("checkpoint is not an index and a JSON state")
			}
		case string(bucketMeta):
			switch string(k) {
			case string(keyFirst):
				metaFirst = v
			case string(keyLast):
				metaLast = v
			}
			if len(v) != 8 {
				return fmt.Errorf("meta %s is %d bytes, want 8", k, len(v))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	first, last := uint64(1), uint64(0)
	if metaFirst != nil {
		first = binary.BigEndian.Uint64(metaFirst)
	}
	if metaLast != nil {
		last = binary.BigEndian.Uint64(metaLast)
	}
	switch {
	case count == 0 && first != last+1 && !(metaFirst == nil && metaLast == nil):
		return fmt.Errorf("%w: %s: no events, but its bounds say %d-%d", ErrDamaged, path, first, last)
	case count > 0 && (firstKey != first || lastKey != last || count != last-first+1):
		return fmt.Errorf("%w: %s: holds %d events from %d to %d, but its bounds say %d-%d", ErrDamaged, path, count, firstKey, lastKey, first, last)
	}
	return nil
}

// openRaftLog opens DIR/raft.db, raft's log and stable store, after
// checking it. raft.db is the source of truth: a damaged one is refused,
// never repaired, with what was found and how to recover.
func openRaftLog(dir string) (bs *raftboltdb.BoltStore, err error) {
	path := filepath.Join(dir, "raft.db")
	refuse := func(what error) error {
		return fmt.Errorf("corral: this server's raft log at %s is damaged (%w): if the other servers are healthy, stop this one, move %s aside and start it again with --join to rejoin as an empty follower; a single server must be restored from a backup",
			path, what, dir)
	}
	if err := checkBoltFile(path, nil); err != nil {
		if errors.Is(err, ErrDamaged) {
			return nil, refuse(err)
		}
		return nil, fmt.Errorf("corral: raft log store %s: %w", path, err)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			bs, err = nil, refuse(fmt.Errorf("%w: bbolt failed reading it: %v", ErrDamaged, r))
		}
	}()
	bs, err = raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		return nil, fmt.Errorf("corral: raft log store %s: %w", path, err)
	}
	// raft panics on a log entry it cannot read: read them all now.
	if err := checkRaftEntries(bs); err != nil {
		bs.Close()
		return nil, refuse(fmt.Errorf("%w: %v", ErrDamaged, err))
	}
	return bs, nil
}

// checkRaftEntries reads every entry of a raft log store: each must decode
// and carry its own index. (raft-boltdb keeps no checksums: bytes changed
// inside an entry's payload can pass; the state machine refuses such a
// proposal as malformed.)
func checkRaftEntries(ls raft.LogStore) error {
	first, err := ls.FirstIndex()
	if err != nil {
		return err
	}
	last, err := ls.LastIndex()
	if err != nil {
		return err
	}
	if first == 0 && last == 0 {
		return nil
	}
	if first == 0 || first > last {
		return fmt.Errorf("log bounds %d-%d", first, last)
	}
	var l raft.Log
	for i := first; i <= last; i++ {
		if err := ls.GetLog(i, &l); err != nil {
			return fmt.Errorf("entry %d of %d-%d: %v", i, first, last, err)
		}
		if l.Index != i {
			return fmt.Errorf("entry %d says it is entry %d", i, l.Index)
		}
	}
	return nil
}
