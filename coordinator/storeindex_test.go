package coordinator

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// scanSubject is the history of one guest or node read the slow way:
// every stored event decoded.
func scanSubject(t *testing.T, s *Store, kind, name string) []uint64 {
	t.Helper()
	f := eventFilter{guest: name}
	if kind == SubjectNode {
		f = eventFilter{node: name}
	}
	first, _ := s.Bounds()
	var out []uint64
	for cursor := first - 1; ; {
		recs, err := s.Read(cursor, 1024)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			cursor = r.Index
			if f.match(r.Data) {
				out = append(out, r.Index)
			}
		}
	}
}

// readSubject is the same history through the index, max records at a
// time, checking that each record is the subject's and that through moves
// on.
func readSubject(t *testing.T, s *Store, kind, name string, max int) []uint64 {
	t.Helper()
	first, last := s.Bounds()
	var out []uint64
	for cursor := first - 1; ; {
		recs, through, err := s.ReadSubject(kind, name, cursor, max)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > max {
			t.Fatalf("asked for %d records, got %d", max, len(recs))
		}
		for _, r := range recs {
			sub, err := subjectOf(r.Data)
			if err != nil || (kind == SubjectGuest && sub.Guest != name) || (kind == SubjectNode && sub.Node != name) {
				t.Fatalf("record %d of %s %s is about %+v (%v)", r.Index, kind, name, sub, err)
			}
			out = append(out, r.Index)
		}
		if len(recs) == 0 {
			if through != last {
				t.Fatalf("an exhausted read of %s %s went through %d, want the last index %d", kind, name, through, last)
			}
			return out
		}
		if through <= cursor {
			t.Fatalf("read after %d went only through %d", cursor, through)
		}
		cursor = through
	}
}

func checkIndexMatchesScan(t *testing.T, s *Store, subjects map[string][]string) {
	t.Helper()
	for kind, names := range subjects {
		for _, name := range names {
			want := scanSubject(t, s, kind, name)
			for _, max := range []int{1, 3, 1024} {
				if got := readSubject(t, s, kind, name, max); !slices.Equal(got, want) {
					t.Fatalf("%s %s, %d at a time: index gives %v, a full scan %v", kind, name, max, got, want)
				}
			}
		}
	}
}

var indexSubjects = map[string][]string{
	SubjectGuest: {"quiet", "g0", "g7", "g250", "nosuch"},
	SubjectNode:  {"n0", "n3", "n49", "nosuch"},
}

func TestStoreSubjectIndex(t *testing.T) {
	h := buildHistoryLog(t, t.TempDir(), 3000, StoreConfig{CheckpointEvery: 500})
	if got := readSubject(t, h.store, SubjectGuest, "quiet", 10); len(got) != 2 {
		t.Fatalf("quiet has %d events through the index, want 2", len(got))
	}
	checkIndexMatchesScan(t, h.store, indexSubjects)
	// A prefix of a name is another subject: g1 is not g10.
	if a, b := readSubject(t, h.store, SubjectGuest, "g1", 100), readSubject(t, h.store, SubjectGuest, "g10", 100); len(a) == 0 || len(b) == 0 || a[0] == b[0] {
		t.Fatalf("g1 %v and g10 %v share records", a, b)
	}
}

func countKeys(t *testing.T, s *Store, bucket []byte) int {
	t.Helper()
	n := 0
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(_, _ []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStoreSubjectIndexTrimmedWithEvents(t *testing.T) {
	h := buildHistoryLog(t, t.TempDir(), 3000, StoreConfig{CheckpointEvery: 500, MaxEvents: 1000})
	before := countKeys(t, h.store, bucketByGuest)
	n, err := h.store.Trim(time.Now())
	if err != nil || n == 0 {
		t.Fatalf("trim removed %d events (%v)", n, err)
	}
	first, _ := h.store.Bounds()
	if after := countKeys(t, h.store, bucketByGuest); after >= before {
		t.Fatalf("the guest index kept %d of %d entries after %d events were trimmed", after, before, n)
	}
	// No entry names a trimmed event.
	err = h.store.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketByGuest, bucketByNode} {
			c := tx.Bucket(b).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if idx := u64From(k[len(k)-8:]); idx < first {
					t.Errorf("%s keeps %q for trimmed event %d (first is %d)", b, k[:len(k)-9], idx, first)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkIndexMatchesScan(t, h.store, indexSubjects)
	if _, _, err := h.store.ReadSubject(SubjectGuest, "g7", 0, 10); err == nil {
		t.Fatal("reading a guest's history from before what is retained did not say it is gone")
	}
}

func u64From(b []byte) uint64 {
	var i uint64
	for _, c := range b {
		i = i<<8 | uint64(c)
	}
	return i
}

// TestStoreReindexOnOpen loses the index buckets, or the index's last
// entries, and checks that opening the store builds them again.
func TestStoreReindexOnOpen(t *testing.T) {
	dir := t.TempDir()
	h := buildHistoryLog(t, dir, 3000, StoreConfig{CheckpointEvery: 500})
	_, last := h.store.Bounds()
	path := filepath.Join(dir, "events.db")
	want := map[string][]uint64{}
	for kind, names := range indexSubjects {
		for _, name := range names {
			want[kind+"/"+name] = readSubject(t, h.store, kind, name, 1024)
		}
	}
	reopen := func(what string, change func(tx *bolt.Tx) error, reindexed int) {
		t.Helper()
		if err := h.store.Close(); err != nil {
			t.Fatal(err)
		}
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(change); err != nil {
			t.Fatal(err)
		}
		db.Close()
		s, err := OpenStore(path, StoreConfig{CheckpointEvery: 500})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		h.store = s
		t.Cleanup(func() { s.Close() })
		if s.Damage() != nil {
			t.Fatalf("%s: the store was taken for damaged: %v", what, s.Damage().Err)
		}
		if s.reindexed != reindexed {
			t.Fatalf("%s: opening indexed %d events, want %d", what, s.reindexed, reindexed)
		}
		for kind, names := range indexSubjects {
			for _, name := range names {
				if got := readSubject(t, s, kind, name, 1024); !slices.Equal(got, want[kind+"/"+name]) {
					t.Fatalf("%s: %s %s reads %v after reopening, want %v", what, kind, name, got, want[kind+"/"+name])
				}
			}
		}
		checkIndexMatchesScan(t, s, indexSubjects)
	}
	reopen("the guest index bucket deleted", func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketByGuest) }, int(last))
	reopen("both index buckets and the mark deleted", func(tx *bolt.Tx) error {
		tx.DeleteBucket(bucketByGuest)
		tx.DeleteBucket(bucketByNode)
		return tx.Bucket(bucketMeta).Delete(keyIndexed)
	}, int(last))
	// The index 40 events behind the events: what a store written by a
	// build without it and then appended to would look like.
	reopen("the index behind", func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketByGuest, bucketByNode} {
			c := tx.Bucket(b).Cursor()
			var drop [][]byte
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if u64From(k[len(k)-8:]) > last-40 {
					drop = append(drop, bytes.Clone(k))
				}
			}
			for _, k := range drop {
				if err := tx.Bucket(b).Delete(k); err != nil {
					return err
				}
			}
		}
		return tx.Bucket(bucketMeta).Put(keyIndexed, u64(last-40))
	}, 40)
	reopen("nothing changed", func(*bolt.Tx) error { return nil }, 0)
}

// TestSubjectOfReadsTheHead checks the envelope-head shortcut against a
// full decode, including strings that look like the payload key.
func TestSubjectOfReadsTheHead(t *testing.T) {
	for _, data := range []string{
		`{"index":1,"type":"guest.defined","v":1,"time":"2025-01-01T00:00:00Z","actor":"a","reason":"x\",\"payload\":{","guest":"g","node":"n","payload":{"guest":"other"}}`,
		`{"index":2,"type":"node.usage","v":1,"time":"2025-01-01T00:00:00Z","actor":"a","node":"n","payload":{"guests":[{"guest":"g"}]}}`,
		`{"payload":{"guest":"p"},"guest":"g"}`,
	} {
		got, err := subjectOf([]byte(data))
		if err != nil {
			t.Fatal(err)
		}
		var want subject
		if err := json.Unmarshal([]byte(data), &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%s: subject %+v, want %+v", data, got, want)
		}
	}
}
