package coordinator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/corral-dev/corral/coordinator/api"
)

// logBuffer collects a server's log lines for a test to look at.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runServer starts a server on cfg, waits until it is ready and returns
// it with a function that stops it (also called when the test ends).
func runServer(t *testing.T, cfg Config) (*Server, func()) {
	t.Helper()
	s, stop := startServer(t, cfg, Deps{})
	select {
	case <-s.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("server %s not ready after 10s", cfg.ID)
	}
	return s, stop
}

// startServer starts a server on cfg and deps and returns it with a
// function that stops it, once, also when the test ends.
func startServer(t testing.TB, cfg Config, deps Deps) (*Server, func()) {
	t.Helper()
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("start server %s: %v", cfg.ID, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
			s.Close()
		})
	}
	t.Cleanup(stop)
	return s, stop
}

// fillServer creates n guests through s and returns the records of its
// event store and the guests it lists.
func fillServer(t *testing.T, s *Server, n int) ([]Record, []*api.Guest) {
	t.Helper()
	c, err := api.NewClient(s.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range n {
		g := api.CreateGuest{Name: fmt.Sprintf("damage-%d", i), Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}
		if _, err := c.CreateGuest(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	return storeContents(t, s), listGuests(t, s)
}

func storeContents(t *testing.T, s *Server) []Record {
	t.Helper()
	if err := s.waitStored(context.Background()); err != nil {
		t.Fatal(err)
	}
	first, last := s.store.Bounds()
	recs, err := s.store.Read(first-1, int(last-first+1))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func listGuests(t *testing.T, s *Server) []*api.Guest {
	t.Helper()
	c, _ := api.NewClient(s.HTTPAddr())
	gs, err := c.Guests(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return gs
}

// boltPages returns the page size and the high water mark of a bbolt file.
func boltPages(t *testing.T, path string) (pageSize, pgid int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := &boltChecker{f: f}
	m, err := c.readMeta(0, 0)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	m1, err := c.readMeta(1, int64(m.pageSize))
	if err == nil && m1.txid > m.txid {
		m = m1
	}
	return int64(m.pageSize), int64(m.pgid)
}

// The ways a test damages a bbolt file. Each returns what it did.
type damage struct {
	name string
	do   func(t *testing.T, path string) string
}

// cutEnd cuts the last page and 300 bytes off the file, as a copy or a
// crash cut short would.
var cutEnd = damage{"cut end", func(t *testing.T, path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := boltPages(t, path)
	size := fi.Size() - ps - 300
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("cut %s from %d to %d bytes", path, fi.Size(), size)
}}

// cutUsed cuts the file inside the pages bbolt uses: the last used page
// and 300 bytes (bbolt grows files ahead of use, so cutting the end may
// only remove room).
var cutUsed = damage{"cut used pages", func(t *testing.T, path string) string {
	ps, pgid := boltPages(t, path)
	size := (pgid-1)*ps - 300
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("cut %s to %d bytes (high water mark %d pages of %d)", path, size, pgid, ps)
}}

// flipPage overwrites the header of every page holding needle: one of
// them is the live copy.
func flipPage(needle string) damage {
	return damage{"flip page header", func(t *testing.T, path string) string {
		return rewrite(t, path, needle, func(b []byte, at int64, ps int64) {
			page := at / ps * ps
			for i := page + 8; i < page+16; i++ { // flags, count, overflow
				b[i] = 0xa5
			}
		})
	}}
}

// flipValue overwrites bytes inside every copy of a record holding needle.
func flipValue(needle string) damage {
	return damage{"flip record bytes", func(t *testing.T, path string) string {
		return rewrite(t, path, needle, func(b []byte, at int64, _ int64) {
			for i := at + int64(len(needle)); i < at+int64(len(needle))+4; i++ {
				b[i] = 0xff
			}
		})
	}}
}

func rewrite(t *testing.T, path, needle string, edit func(b []byte, at, pageSize int64)) string {
	t.Helper()
	ps, _ := boltPages(t, path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(needle))
		if i < 0 {
			break
		}
		edit(b, int64(off+i), ps)
		off += i + len(needle)
		n++
	}
	if n == 0 {
		t.Fatalf("%s holds no %q to damage", path, needle)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("damaged %d copies of %q in %s", n, needle, path)
}

// TestEventStoreDamagedIsRebuilt: a torn or corrupt events.db is found on
// open, moved aside and rebuilt from raft; the server comes up, says so,
// and serves the same events and state.
func TestEventStoreDamagedIsRebuilt(t *testing.T) {
	for _, d := range []damage{cutEnd, cutUsed, flipPage(`{"index":7,`), flipValue(`{"index":7,`)} {
		t.Run(d.name, func(t *testing.T) {
			var logs logBuffer
			cfg := TestConfig(t, "s1", t.TempDir())
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			s, stop := runServer(t, cfg)
			wantEvents, wantGuests := fillServer(t, s, 12)
			stop()

			path := filepath.Join(cfg.DataDir, "events.db")
			did := d.do(t, path)
			damaged := checkStoreFile(path)
			t.Logf("%s: check says %v", did, damaged)

			s, _ = runServer(t, cfg)
			last := wantEvents[len(wantEvents)-1].Index
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := s.WaitIndex(ctx, last); err != nil {
				t.Fatalf("store did not reach index %d after restart: %v", last, err)
			}
			// The restarted leader may add events (its new address).
			if got := storeContents(t, s); !sameRecords(got[:min(len(got), len(wantEvents))], wantEvents) {
				t.Fatalf("after restart the store holds %d events %d-%d, want the %d written", len(got), got[0].Index, got[len(got)-1].Index, len(wantEvents))
			}
			if got := listGuests(t, s); len(got) != len(wantGuests) {
				t.Fatalf("after restart %d guests, want %d", len(got), len(wantGuests))
			}
			if damaged == nil {
				// Only room past the last used page was cut: nothing to rebuild.
				if s.store.Damage() != nil {
					t.Fatalf("store rebuilt although the check found nothing: %v", s.store.Damage().Err)
				}
				return
			}
			dm := s.store.Damage()
			if dm == nil || !errors.Is(dm.Err, ErrDamaged) {
				t.Fatalf("damage not reported: %+v", dm)
			}
			if _, err := os.Stat(dm.MovedTo); err != nil || !strings.HasPrefix(dm.MovedTo, path+".corrupt-") {
				t.Fatalf("damaged file not moved aside to %s.corrupt-*: %q, %v", path, dm.MovedTo, err)
			}
			if l := logs.String(); !strings.Contains(l, "event store was damaged") || !strings.Contains(l, dm.MovedTo) {
				t.Fatalf("log does not say what was found and done:\n%s", l)
			}
		})
	}
}

// TestEventStoreRebuiltAfterSnapshot: when raft has compacted its log into
// a snapshot, the rebuilt store starts at the snapshot; older events
// answer 410 Gone, and the log says so.
func TestEventStoreRebuiltAfterSnapshot(t *testing.T) {
	var logs logBuffer
	cfg := TestConfig(t, "s1", t.TempDir())
	cfg.Raft.TrailingLogs = 1
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, stop := runServer(t, cfg)
	before, _ := fillServer(t, s, 6)
	if err := s.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	wantGuests := listGuests(t, s)
	c, _ := api.NewClient(s.HTTPAddr())
	if _, err := c.CreateGuest(context.Background(), api.CreateGuest{Name: "late", Driver: "process", Memory: "16MiB", Command: []string{"/bin/true"}, NoStart: true}); err != nil {
		t.Fatal(err)
	}
	after := storeContents(t, s)
	stop()
	path := filepath.Join(cfg.DataDir, "events.db")
	cutUsed.do(t, path)

	s, _ = runServer(t, cfg)
	last := after[len(after)-1].Index
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitIndex(ctx, last); err != nil {
		t.Fatal(err)
	}
	first, _ := s.store.Bounds()
	if first <= 1 || first > before[len(before)-1].Index+1 {
		t.Fatalf("rebuilt store starts at %d, want just after the snapshot (at most %d)", first, before[len(before)-1].Index+1)
	}
	if _, err := s.store.Read(0, 10); !errors.As(err, new(*api.GoneError)) {
		t.Fatalf("read of events before the snapshot: %v, want gone", err)
	}
	if got := listGuests(t, s); len(got) != len(wantGuests)+1 {
		t.Fatalf("after restart %d guests, want %d", len(got), len(wantGuests)+1)
	}
	if !strings.Contains(logs.String(), "410 Gone") {
		t.Fatalf("log does not say older events are gone:\n%s", logs.String())
	}
}

func sameRecords(a, b []Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Index != b[i].Index || !bytes.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

// TestRaftLogDamagedIsRefused: a torn or corrupt raft.db stops the server
// with a message that names the file, says what was found and how to
// recover; never a panic.
func TestRaftLogDamagedIsRefused(t *testing.T) {
	for _, d := range []damage{cutEnd, cutUsed, flipPage("damage-3")} {
		t.Run(d.name, func(t *testing.T) {
			cfg := TestConfig(t, "s1", t.TempDir())
			s, stop := runServer(t, cfg)
			fillServer(t, s, 12)
			stop()
			path := filepath.Join(cfg.DataDir, "raft.db")
			did := d.do(t, path)
			if d.name == cutEnd.name && checkBoltFile(path, nil) == nil {
				// bbolt grows its files ahead of use: this cut removed
				// only room, and the server must start with everything.
				s, _ := runServer(t, cfg)
				if got := listGuests(t, s); len(got) != 12 {
					t.Fatalf("%s: after restart %d guests, want 12", did, len(got))
				}
				return
			}
			s, err := New(cfg, Deps{})
			if err == nil {
				s.Close()
				t.Fatalf("%s: server started", did)
			}
			t.Logf("%s: %v", did, err)
			for _, want := range []string{"raft log at " + path + " is damaged", "--join", "backup", "move " + cfg.DataDir + " aside"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error does not say %q: %v", want, err)
				}
			}
			if !errors.Is(err, ErrDamaged) {
				t.Fatalf("error does not wrap ErrDamaged: %v", err)
			}
		})
	}
}

// TestCheckBoltFileSound: the check passes every file a healthy server
// wrote, and a missing or empty one.
func TestCheckBoltFileSound(t *testing.T) {
	cfg := TestConfig(t, "s1", t.TempDir())
	cfg.Store.CheckpointEvery = 5
	s, stop := runServer(t, cfg)
	fillServer(t, s, 40)
	stop()
	for _, f := range []string{"events.db", "raft.db"} {
		if err := checkBoltFile(filepath.Join(cfg.DataDir, f), nil); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if err := checkStoreFile(filepath.Join(cfg.DataDir, "events.db")); err != nil {
		t.Fatal(err)
	}
	if err := checkBoltFile(filepath.Join(cfg.DataDir, "missing.db"), nil); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(cfg.DataDir, "empty.db")
	os.WriteFile(empty, nil, 0o600)
	if err := checkBoltFile(empty, nil); err != nil {
		t.Fatal(err)
	}
	// Both meta pages gone: not a bbolt file any more.
	b, _ := os.ReadFile(filepath.Join(cfg.DataDir, "events.db"))
	ps := int(binary.LittleEndian.Uint32(b[16+8:]))
	clear(b[:2*ps])
	junk := filepath.Join(cfg.DataDir, "junk.db")
	os.WriteFile(junk, b, 0o600)
	if err := checkBoltFile(junk, nil); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "no valid meta page") {
		t.Fatalf("zeroed meta pages: %v", err)
	}
}

// unreadableLog is a log store whose entry bad cannot be read.
type unreadableLog struct {
	*raft.InmemStore
	bad uint64
}

func (u unreadableLog) GetLog(i uint64, l *raft.Log) error {
	if i == u.bad {
		return errors.New("msgpack decode error")
	}
	return u.InmemStore.GetLog(i, l)
}

// TestCheckRaftEntries: every entry of the raft log is read at open, so
// an entry raft could not read (and would panic on) is found first.
func TestCheckRaftEntries(t *testing.T) {
	st := raft.NewInmemStore()
	if err := checkRaftEntries(st); err != nil {
		t.Fatalf("empty log: %v", err)
	}
	for i := uint64(1); i <= 5; i++ {
		st.StoreLog(&raft.Log{Index: i, Term: 1, Data: []byte("x")})
	}
	if err := checkRaftEntries(st); err != nil {
		t.Fatalf("sound log: %v", err)
	}
	if err := checkRaftEntries(unreadableLog{st, 3}); err == nil || !strings.Contains(err.Error(), "entry 3 of 1-5") {
		t.Fatalf("unreadable entry 3: %v", err)
	}
}

// FuzzCheckStoreFile: whatever bytes events.db holds, opening it never
// crashes: the check refuses the file, or bbolt opens and reads it.
// The seed runs with the tests; to mutate it (coverage-guided fuzzing
// crawls on an input this large, blind mutation does ~400 files a second):
//
//	go test -c -o /tmp/coord.test ./coordinator &&
//	  /tmp/coord.test -test.run '^$' -test.fuzz FuzzCheckStoreFile -test.fuzztime 60s
func FuzzCheckStoreFile(f *testing.F) {
	dir := f.TempDir()
	seed := filepath.Join(dir, "seed.db")
	st, err := OpenStore(seed, StoreConfig{CheckpointEvery: 4})
	if err != nil {
		f.Fatal(err)
	}
	for i := uint64(1); i <= 40; i++ {
		data := fmt.Sprintf(`{"index":%d,"type":"guest.defined","payload":{"name":"g%d","pad":"%s"}}`, i, i, strings.Repeat("x", int(i*7)))
		if err := st.Append([]Record{{Index: i, Data: []byte(data)}}); err != nil {
			f.Fatal(err)
		}
		if i%10 == 0 {
			st.PutCheckpoint(Record{Index: i, Data: []byte(`{"index":1}`)})
		}
	}
	st.Close()
	b, err := os.ReadFile(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "events.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if checkStoreFile(path) != nil {
			return
		}
		st, err := OpenStore(path, StoreConfig{CheckpointEvery: 4})
		if err != nil {
			return
		}
		defer st.Close()
		if st.Damage() != nil {
			return
		}
		first, last := st.Bounds()
		if first <= last {
			if _, err := st.Read(first-1, int(last-first+1)); err != nil {
				t.Fatalf("read a store the check passed: %v", err)
			}
		}
		st.Checkpoint(last)
	})
}

// FuzzOpenRaftLog: whatever bytes raft.db holds, opening it never crashes:
// it is refused as damaged, fails with an error, or opens with every entry
// readable. Run it as FuzzCheckStoreFile.
func FuzzOpenRaftLog(f *testing.F) {
	dir := f.TempDir()
	bs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		f.Fatal(err)
	}
	for i := uint64(1); i <= 60; i++ {
		bs.StoreLog(&raft.Log{Index: i, Term: 1 + i/20, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, int(i*11))})
	}
	bs.DeleteRange(1, 10)
	bs.SetUint64([]byte("CurrentTerm"), 3)
	bs.Close()
	b, err := os.ReadFile(filepath.Join(dir, "raft.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "raft.db"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		bs, err := openRaftLog(dir)
		if err != nil {
			return
		}
		defer bs.Close()
		if err := checkRaftEntries(bs); err != nil {
			t.Fatalf("entries of an opened log: %v", err)
		}
		bs.GetUint64([]byte("CurrentTerm"))
	})
}
