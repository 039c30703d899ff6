package coordinator

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/corral-dev/corral/coordinator/api"
)

// StoreConfig sets the event store's retention. Zero means unbounded.
// Retention trims only up to a checkpoint, so that the state at every
// retained index can still be rebuilt; a store keeps up to one checkpoint
// interval more than asked. Checkpoints are CheckpointEvery events apart, or
// as many events as the state has guests and nodes if that is more.
type StoreConfig struct {
	MaxEvents       uint64
	MaxAge          time.Duration
	CheckpointEvery uint64
}

// DefaultStoreConfig keeps everything and checkpoints every 1,000 events
// (or every guests+nodes events in a larger state), so that `state --at`
// replays about that many events at most.
func DefaultStoreConfig() StoreConfig { return StoreConfig{CheckpointEvery: 1000} }

// Validate checks the configuration.
func (c StoreConfig) Validate() error {
	if c.CheckpointEvery == 0 {
		return errors.New("corral: event store checkpoint interval must be at least 1")
	}
	if c.MaxAge < 0 {
		return errors.New("corral: event retention age must not be negative")
	}
	return nil
}

var (
	bucketEvents      = []byte("events")
	bucketCheckpoints = []byte("checkpoints")
	bucketMeta        = []byte("meta")
	keyFirst          = []byte("first")
	keyLast           = []byte("last")
)

// Record is one stored event: its index and its encoding.
type Record struct {
	Index uint64
	Data  []byte
	// about, when set, is who the event is about, as Data says: the
	// state machine knows it, and storing the record then need not read
	// Data again for the subject indexes.
	about *subject
}

// Store keeps committed events by index on one server, independently of
// raft's log compaction, plus state checkpoints from which the state at any
// retained index is rebuilt. Events are appended by the fsm's store writer
// only; reads and waits come from any goroutine.
//
// Writes are not fsynced one by one: the raft log is the durable copy and
// is replayed into the store after a crash. Sync is called before every raft
// snapshot, so the store never falls behind what raft can still replay.
type Store struct {
	db  *bolt.DB
	cfg StoreConfig

	// damage says what OpenStore found wrong with the file it moved
	// aside; nil when the store opened as it was.
	damage *StoreDamage
	// disk, when set (Server does), names a full disk in write errors.
	disk *diskGuard
	// reindexed is how many events OpenStore had to add to the subject
	// indexes (storeindex.go): all of them for a store that had none.
	reindexed int

	mu     sync.Mutex
	first  uint64 // first retained index; last+1 when empty
	last   uint64
	notify chan struct{} // closed and replaced on every append
}

// StoreDamage describes an event store file that OpenStore found damaged
// and replaced with an empty one.
type StoreDamage struct {
	Err     error  // what was found, wrapping ErrDamaged
	MovedTo string // where the damaged file now is
}

// Damage returns what OpenStore found wrong with the store's file, nil when
// it opened as it was. A damaged store starts empty: the caller replays
// raft into it.
func (s *Store) Damage() *StoreDamage { return s.damage }

// OpenStore opens or creates the store at path. The file is checked before
// bbolt maps it (see checkBoltFile and checkStoreFile): the store is
// derived from raft, so a torn or corrupt file is moved aside to
// path.corrupt-<time> and an empty store is started instead of failing or
// crashing; Damage reports it.
func OpenStore(path string, cfg StoreConfig) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var damage *StoreDamage
	err := checkStoreFile(path)
	var db *bolt.DB
	if err == nil {
		db, err = openBoltGuarded(path, &bolt.Options{Timeout: 2 * time.Second, NoSync: true, NoFreelistSync: true})
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("corral: event store %s is locked: is another corral using this data dir? stop it or give another --data-dir", path)
		}
	}
	if errors.Is(err, ErrDamaged) {
		aside := fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405.000Z"))
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("corral: event store %s is damaged (%v) and could not be moved aside: %v; move it away by hand and start again", path, err, rerr)
		}
		damage = &StoreDamage{Err: err, MovedTo: aside}
		db, err = openBoltGuarded(path, &bolt.Options{Timeout: 2 * time.Second, NoSync: true, NoFreelistSync: true})
	}
	if err != nil {
		return nil, fmt.Errorf("corral: open event store %s: %w", path, err)
	}
	s := &Store{db: db, cfg: cfg, first: 1, notify: make(chan struct{}), damage: damage}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEvents, bucketCheckpoints, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if v := m.Get(keyFirst); v != nil {
			s.first = binary.BigEndian.Uint64(v)
		}
		if v := m.Get(keyLast); v != nil {
			s.last = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err == nil {
		s.reindexed, err = s.reindex()
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("corral: open event store %s: %w", path, err)
	}
	return s, nil
}

func u64(i uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], i)
	return b[:]
}

// Bounds returns the first retained and the last stored index. The store is
// empty when first > last.
func (s *Store) Bounds() (first, last uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, s.last
}

// Append stores records that must continue the store without a gap.
// Records at or below the last stored index are skipped: replay after a
// restart appends what is already there.
func (s *Store) Append(recs []Record) error {
	s.mu.Lock()
	last := s.last
	s.mu.Unlock()
	start := 0
	for start < len(recs) && recs[start].Index <= last {
		start++
	}
	recs = recs[start:]
	if len(recs) == 0 {
		return nil
	}
	if len(recs) > 0 && recs[0].Index != last+1 {
		return fmt.Errorf("corral: event store gap: last stored %d, next %d", last, recs[0].Index)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		b.FillPercent = 1.0 // append-only keys
		for _, r := range recs {
			if err := b.Put(u64(r.Index), r.Data); err != nil {
				return err
			}
			if err := indexPut(tx, r); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if err := m.Put(keyIndexed, u64(recs[len(recs)-1].Index)); err != nil {
			return err
		}
		return m.Put(keyLast, u64(recs[len(recs)-1].Index))
	})
	if err != nil {
		return fmt.Errorf("corral: event store append: %w", s.disk.failed(err))
	}
	s.mu.Lock()
	s.last = recs[len(recs)-1].Index
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	return nil
}

// Prepend stores records that end right before the first retained index,
// without a gap: events older than what this store holds, fetched from a
// peer after the store was rebuilt from a raft snapshot or the server
// joined through one.
func (s *Store) Prepend(recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	s.mu.Lock()
	first := s.first
	s.mu.Unlock()
	for i, r := range recs {
		if r.Index == 0 || (i > 0 && r.Index != recs[i-1].Index+1) {
			return fmt.Errorf("corral: event store prepend: records are not dense at %d", r.Index)
		}
	}
	if end := recs[len(recs)-1].Index; end+1 != first {
		return fmt.Errorf("corral: event store prepend: records end at %d, the store starts at %d", end, first)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		for _, r := range recs {
			if err := b.Put(u64(r.Index), r.Data); err != nil {
				return err
			}
			if err := indexPut(tx, r); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keyFirst, u64(recs[0].Index))
	})
	if err != nil {
		return fmt.Errorf("corral: event store prepend: %w", s.disk.failed(err))
	}
	s.mu.Lock()
	s.first = recs[0].Index
	s.mu.Unlock()
	return nil
}

// PutCheckpoint stores the encoded state as of cp.Index.
func (s *Store) PutCheckpoint(cp Record) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCheckpoints).Put(u64(cp.Index), cp.Data)
	})
	if err != nil {
		return fmt.Errorf("corral: event store checkpoint: %w", err)
	}
	return nil
}

// Reset empties the store and restarts it after index at, with a checkpoint
// of the state at that index. It is used when a raft snapshot brings the
// state past what the store holds (a new server, or a lost disk).
func (s *Store) Reset(at uint64, state []byte) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEvents, bucketCheckpoints, bucketByGuest, bucketByNode} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketCheckpoints).Put(u64(at), state); err != nil {
			return err
		}
		m := tx.Bucket(bucketMeta)
		if err := m.Put(keyFirst, u64(at+1)); err != nil {
			return err
		}
		if err := m.Put(keyIndexed, u64(at)); err != nil {
			return err
		}
		return m.Put(keyLast, u64(at))
	})
	if err != nil {
		return fmt.Errorf("corral: event store reset: %w", err)
	}
	s.mu.Lock()
	s.first, s.last = at+1, at
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	return s.Sync()
}

// Read returns up to max records with index > after. It returns an api.GoneError
// when after+1 is older than what is retained.
func (s *Store) Read(after uint64, max int) ([]Record, error) {
	first, last := s.Bounds()
	if after+1 < first {
		return nil, &api.GoneError{Asked: after + 1, First: first}
	}
	if after >= last {
		return nil, nil
	}
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			out = append(out, Record{Index: binary.BigEndian.Uint64(k), Data: append([]byte(nil), v...)})
		}
		return nil
	})
	return out, err
}

// appended returns the last stored index and a channel closed when a
// later one is stored.
func (s *Store) appended() (last uint64, next <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.notify
}

// Checkpoint returns the newest checkpoint at or below index, or ok=false
// when there is none (the empty state at index 0 is always implied when
// nothing was trimmed).
func (s *Store) Checkpoint(index uint64) (Record, bool, error) {
	var r Record
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketCheckpoints).Cursor()
		k, v := c.Seek(u64(index))
		switch {
		case k == nil:
			k, v = c.Last()
		case binary.BigEndian.Uint64(k) > index:
			k, v = c.Prev()
		}
		if k != nil {
			r = Record{Index: binary.BigEndian.Uint64(k), Data: append([]byte(nil), v...)}
			ok = true
		}
		return nil
	})
	return r, ok, err
}

// Trim applies retention as of now and returns how many events it removed.
func (s *Store) Trim(now time.Time) (int, error) {
	first, last := s.Bounds()
	if first > last {
		return 0, nil
	}
	var upTo uint64 // remove events <= upTo
	if s.cfg.MaxEvents > 0 && last-first+1 > s.cfg.MaxEvents {
		upTo = last - s.cfg.MaxEvents
	}
	if s.cfg.MaxAge > 0 {
		cutoff := now.Add(-s.cfg.MaxAge)
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketEvents).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				var e struct {
					Time time.Time `json:"time"`
				}
				if json.Unmarshal(v, &e) != nil || !e.Time.Before(cutoff) {
					break
				}
				upTo = max(upTo, binary.BigEndian.Uint64(k))
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	if upTo < first {
		return 0, nil
	}
	cp, ok, err := s.Checkpoint(upTo)
	if err != nil || !ok || cp.Index < first {
		return 0, err
	}
	upTo = cp.Index
	n := 0
	err = s.db.Update(func(tx *bolt.Tx) error {
		// Collect keys first: deleting under a moving cursor skips keys.
		// The subject indexes lose the same events.
		n, err = deleteBelow(tx.Bucket(bucketEvents), upTo+1, func(k, v []byte) error {
			return indexDelete(tx, binary.BigEndian.Uint64(k), v)
		})
		if err != nil {
			return err
		}
		if _, err := deleteBelow(tx.Bucket(bucketCheckpoints), upTo, nil); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyFirst, u64(upTo+1))
	})
	if err != nil {
		return 0, fmt.Errorf("corral: event store trim: %w", err)
	}
	s.mu.Lock()
	s.first = upTo + 1
	s.mu.Unlock()
	return n, nil
}

// Sync flushes the store to disk.
func (s *Store) Sync() error { return s.db.Sync() }

// Close syncs and closes the store.
func (s *Store) Close() error {
	if err := s.db.Sync(); err != nil {
		s.db.Close()
		return err
	}
	return s.db.Close()
}

// deleteBelow removes every key below limit from b, calling each, when not
// nil, with every pair before it is removed.
func deleteBelow(b *bolt.Bucket, limit uint64, each func(k, v []byte) error) (int, error) {
	var keys [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) < limit; k, v = c.Next() {
		if each != nil {
			if err := each(k, v); err != nil {
				return 0, err
			}
		}
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}
