package driver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQMP serves one connection at path, answering with script: for each
// command it reads, the lines listed for that command's name ("" is the
// greeting). "{id}" in a line becomes the command's id.
func fakeQMP(t *testing.T, script map[string][]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serveQMP(c, script)
		}
	}()
	return path
}

func serveQMP(c net.Conn, script map[string][]string) {
	defer c.Close()
	w := bufio.NewWriter(c)
	for _, l := range script[""] {
		w.WriteString(l + "\n")
	}
	w.Flush()
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var req struct {
			Execute string          `json:"execute"`
			ID      json.RawMessage `json:"id"`
		}
		if json.Unmarshal(sc.Bytes(), &req) != nil {
			return
		}
		lines, ok := script[req.Execute]
		if !ok {
			lines = []string{`{"error": {"class": "CommandNotFound", "desc": "no such command"}, "id": {id}}`}
		}
		for _, l := range lines {
			if l == "CLOSE" {
				w.Flush()
				return
			}
			w.WriteString(strings.ReplaceAll(l, "{id}", string(req.ID)) + "\n")
		}
		w.Flush()
	}
}

// TestQMPProtocol: greeting and capabilities, events between a command and
// its answer, answers to other ids skipped, errors typed, quit's closed
// connection taken as success, reconnect after a failure.
func TestQMPProtocol(t *testing.T) {
	path := fakeQMP(t, map[string][]string{
		"":                 {`{"QMP": {"version": {}, "capabilities": []}}`},
		"qmp_capabilities": {`{"return": {}, "id": {id}}`},
		"query-status": {
			`{"event": "STOP", "data": {}, "timestamp": {}}`,
			`{"return": {"status": "stale"}, "id": "old"}`,
			`{"return": {"status": "running", "running": true}, "id": {id}}`,
		},
		"query-balloon": {`{"return": {"actual": 134217728}, "id": {id}}`},
		"quit":          {`{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}`, "CLOSE"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := NewQMP(path)
	defer q.Close()
	if st, err := q.Status(ctx); err != nil || st != "running" {
		t.Errorf("Status = %q, %v", st, err)
	}
	if b, err := q.Balloon(ctx); err != nil || b != 128<<20 {
		t.Errorf("Balloon = %d, %v", b, err)
	}
	var qe *QMPError
	if err := q.Stop(ctx); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("Stop against a server without it: %v", err)
	}
	if err := q.Quit(ctx); err != nil {
		t.Errorf("Quit: %v", err)
	}
	if r := q.shutdownReason(10 * time.Millisecond); r != "host-qmp-quit" {
		t.Errorf("shutdown reason %q", r)
	}
	// The server closed the connection; the next command dials again.
	if st, err := q.Status(ctx); err != nil || st != "running" {
		t.Errorf("Status after reconnect = %q, %v", st, err)
	}
}

// TestTrimLog cuts logs on a file system that collapses ranges (the test's
// temporary directory, when it is ext4 or xfs) and on one that does not
// (/dev/shm, tmpfs), keeping the newest output.
func TestTrimLog(t *testing.T) {
	dirs := []string{t.TempDir()}
	if shm, err := os.MkdirTemp("/dev/shm", "corral-trim-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(shm) })
		dirs = append(dirs, shm)
	}
	for _, dir := range dirs {
		path := filepath.Join(dir, "guest.log")
		f, err := openLog(path)
		if err != nil {
			t.Fatal(err)
		}
		var all strings.Builder
		for i := range 40000 {
			all.WriteString(strings.Repeat("x", 20) + " " + string(rune('a'+i%26)) + "\n")
		}
		all.WriteString("THE END\n")
		if _, err := f.WriteString(all.String()); err != nil {
			t.Fatal(err)
		}
		const capBytes = 256 << 10
		dropped, err := trimLog(path, capBytes)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		// The guest's descriptor keeps appending after the cut.
		f.WriteString("after\n")
		f.Close()
		b, _ := os.ReadFile(path)
		if int64(len(b)) > capBytes || dropped == 0 || !strings.HasSuffix(string(b), "THE END\nafter\n") {
			t.Errorf("%s: after trimming %d bytes the log has %d bytes, ends %q", dir, dropped, len(b), b[max(0, len(b)-20):])
		}
		t.Logf("%s: dropped %d bytes, by copying: %v", dir, dropped, strings.HasPrefix(string(b), dropMarker))
		if !strings.HasSuffix(all.String(), strings.TrimPrefix(strings.TrimSuffix(string(b), "after\n"), dropMarker)) {
			t.Errorf("%s: the kept bytes are not the newest output", dir)
		}
		if n, err := trimLog(path, capBytes); err != nil || n != 0 {
			t.Errorf("%s: a log under its cap was trimmed: %d, %v", dir, n, err)
		}
	}
}
