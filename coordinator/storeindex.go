package coordinator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/corral-dev/corral/coordinator/api"
)

// The subject indexes let a guest's or a node's history be read without
// decoding every stored event. Each holds one empty value per event under
// the key name, 0, index (8 bytes, big-endian): a prefix scan yields one
// subject's events in index order. IDs cannot hold a 0 byte, so one
// subject's prefix never begins another's.
//
// They are written in the same transaction as the events they name and
// trimmed with them, so they never disagree with the events; keyIndexed
// says through which index they are complete. A store written before they
// existed, or one whose index buckets were lost, is indexed again when it
// opens (reindex).
var (
	bucketByGuest = []byte("byguest")
	bucketByNode  = []byte("bynode")
	keyIndexed    = []byte("indexed")
)

// Subject kinds for ReadSubject.
const (
	SubjectGuest = "guest"
	SubjectNode  = "node"
)

// subject is who an event is about.
type subject struct {
	Guest string `json:"guest"`
	Node  string `json:"node"`
}

// payloadKey ends the envelope's fields that events.Marshal writes before
// the payload. Inside a JSON string every quote is escaped, so its first
// occurrence is the key itself.
var payloadKey = []byte(`,"payload":`)

// subjectOf reads the guest and node an encoded event names. It decodes
// only the envelope's head when the encoding is the canonical one, and the
// whole event otherwise.
func subjectOf(data []byte) (subject, error) {
	var s subject
	if i := bytes.Index(data, payloadKey); i > 0 {
		head := make([]byte, 0, i+1)
		head = append(append(head, data[:i]...), '}')
		if json.Unmarshal(head, &s) == nil {
			return s, nil
		}
	}
	s = subject{}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("corral: stored event is not JSON: %w", err)
	}
	return s, nil
}

// subject is who r is about: what the state machine said, or else what
// its encoding says.
func (r Record) subject() (subject, error) {
	if r.about != nil {
		return *r.about, nil
	}
	return subjectOf(r.Data)
}

func subjectKey(name string, index uint64) []byte {
	k := make([]byte, 0, len(name)+9)
	k = append(append(k, name...), 0)
	return binary.BigEndian.AppendUint64(k, index)
}

// indexPut adds the subject entries of the event at index. An event that
// cannot be read is left out of the indexes: it is still in the events,
// and one bad record must not stop the rest.
func indexPut(tx *bolt.Tx, r Record) error {
	index := r.Index
	s, err := r.subject()
	if err != nil {
		return nil
	}
	if s.Guest != "" {
		b := tx.Bucket(bucketByGuest)
		b.FillPercent = 0.9
		if err := b.Put(subjectKey(s.Guest, index), nil); err != nil {
			return err
		}
	}
	if s.Node != "" {
		b := tx.Bucket(bucketByNode)
		b.FillPercent = 0.9
		if err := b.Put(subjectKey(s.Node, index), nil); err != nil {
			return err
		}
	}
	return nil
}

// indexDelete removes the subject entries of the event at index.
func indexDelete(tx *bolt.Tx, index uint64, data []byte) error {
	s, err := subjectOf(data)
	if err != nil {
		return nil
	}
	if s.Guest != "" {
		if err := tx.Bucket(bucketByGuest).Delete(subjectKey(s.Guest, index)); err != nil {
			return err
		}
	}
	if s.Node != "" {
		if err := tx.Bucket(bucketByNode).Delete(subjectKey(s.Node, index)); err != nil {
			return err
		}
	}
	return nil
}

// reindexBatch bounds one reindexing transaction, so that indexing a
// large store does not hold every dirty page in memory at once.
const reindexBatch = 50000

// reindex makes the subject indexes cover every stored event: it creates
// missing index buckets (and then indexes everything), or indexes the
// events after keyIndexed. It returns how many events it indexed.
func (s *Store) reindex() (int, error) {
	var from uint64 // index events >= from
	err := s.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		missing := tx.Bucket(bucketByGuest) == nil || tx.Bucket(bucketByNode) == nil
		v := m.Get(keyIndexed)
		switch {
		case missing || v == nil:
			for _, name := range [][]byte{bucketByGuest, bucketByNode} {
				if tx.Bucket(name) != nil {
					if err := tx.DeleteBucket(name); err != nil {
						return err
					}
				}
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			from = s.first
		default:
			from = max(binary.BigEndian.Uint64(v)+1, s.first)
		}
		if from > s.last {
			return m.Put(keyIndexed, u64(s.last))
		}
		return nil
	})
	if err != nil || from > s.last {
		return 0, err
	}
	n := 0
	for from <= s.last {
		err := s.db.Update(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketEvents).Cursor()
			done := 0
			k, v := c.Seek(u64(from))
			for ; k != nil && done < reindexBatch; k, v = c.Next() {
				if err := indexPut(tx, Record{Index: binary.BigEndian.Uint64(k), Data: v}); err != nil {
					return err
				}
				done++
			}
			n += done
			through := s.last
			if k != nil {
				through = binary.BigEndian.Uint64(k) - 1
			}
			from = through + 1
			return tx.Bucket(bucketMeta).Put(keyIndexed, u64(through))
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ReadSubject returns up to max records with index > after whose guest
// (kind SubjectGuest) or node (SubjectNode) is name, in index order, and
// through: the index up to which no other record of that subject exists,
// so that reading on from through misses nothing. It reads only the
// subject's own records. It returns an api.GoneError when after+1 is older
// than what is retained.
func (s *Store) ReadSubject(kind, name string, after uint64, max int) (recs []Record, through uint64, err error) {
	bucket := bucketByGuest
	if kind == SubjectNode {
		bucket = bucketByNode
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		first, last := uint64(1), uint64(0)
		if v := m.Get(keyFirst); v != nil {
			first = binary.BigEndian.Uint64(v)
		}
		if v := m.Get(keyLast); v != nil {
			last = binary.BigEndian.Uint64(v)
		}
		if after+1 < first {
			return &api.GoneError{Asked: after + 1, First: first}
		}
		through = max64(after, last)
		events := tx.Bucket(bucketEvents)
		prefix := subjectKey(name, 0)[:len(name)+1]
		c := tx.Bucket(bucket).Cursor()
		for k, _ := c.Seek(subjectKey(name, after+1)); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) != len(prefix)+8 {
				continue
			}
			idx := binary.BigEndian.Uint64(k[len(prefix):])
			if len(recs) == max {
				through = recs[len(recs)-1].Index
				break
			}
			if v := events.Get(u64(idx)); v != nil {
				recs = append(recs, Record{Index: idx, Data: append([]byte(nil), v...)})
			}
		}
		return nil
	})
	return recs, through, err
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}
