package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/corral-dev/corral/coordinator/bus"
)

// fakeLogAgent answers log reads for one node over real NATS from an
// in-memory log per guest, as the node agent does from its files.
type fakeLogAgent struct {
	mu   sync.Mutex
	logs map[string][]byte
}

func (f *fakeLogAgent) write(guest, s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs[guest] = append(f.logs[guest], s...)
}

// cut replaces the guest's log with what remains after its head is cut.
func (f *fakeLogAgent) cut(guest, rest string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs[guest] = []byte(rest)
}

func (f *fakeLogAgent) answer(req []byte) []byte {
	var q api.LogRequest
	var rep api.LogReply
	if err := json.Unmarshal(req, &q); err != nil {
		rep = api.LogReply{Code: api.CodeInvalid, Error: err.Error()}
	} else {
		f.mu.Lock()
		log, ok := f.logs[q.Guest]
		size := int64(len(log))
		off := q.Offset
		switch {
		case !ok:
			rep = api.LogReply{Code: api.CodeNotFound, Error: "no such guest here"}
		case q.Tail > 0:
			off = max(0, size-q.Tail)
		case off > size:
			off, rep.Truncated = 0, true
		}
		if ok {
			end := min(size, off+int64(min(q.Max, api.LogChunkMax)))
			rep.Data = bytes.Clone(log[off:end])
			rep.Next, rep.Size = end, size
		}
		f.mu.Unlock()
	}
	b, _ := json.Marshal(rep)
	return b
}

// serveFakeLogs starts a fake agent for node on s's NATS until the test ends.
func serveFakeLogs(t *testing.T, s *Server, node string) *fakeLogAgent {
	t.Helper()
	f := &fakeLogAgent{logs: map[string][]byte{}}
	conn, err := bus.Dial(s.NATSURL(), "fake-agent-"+node)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn.Serve(ctx, bus.LogsSubject(node), f.answer)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close()
	})
	// Serve subscribes on its own goroutine: wait until it answers.
	WaitFor(t, 5*time.Second, "the fake agent to answer", func() bool {
		rctx, rcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer rcancel()
		_, err := conn.Request(rctx, bus.LogsSubject(node), []byte(`{"guest":"probe"}`))
		return err == nil
	})
	return f
}

// syncBuffer is a bytes.Buffer a follower writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func readLogs(t *testing.T, cl *api.Client, name string, q api.LogQuery) string {
	t.Helper()
	var b bytes.Buffer
	if err := cl.Logs(context.Background(), name, q, &b); err != nil {
		t.Fatalf("logs %s %+v: %v", name, q, err)
	}
	return b.String()
}

func TestGuestLogs(t *testing.T) {
	s, cl := startAgentServer(t)
	cl.Retry = 0 // an unavailable answer is the answer here
	ctx := context.Background()
	if _, err := cl.RegisterNode(ctx, agentNode("n1"), "s3cret"); err != nil {
		t.Fatal(err)
	}
	create(t, cl, "web", "64MiB", nil)
	WaitFor(t, 5*time.Second, "placement", func() bool { return guestsOn(t, cl)["web"] == "n1" })

	// Nobody answers for n1 yet.
	err := cl.Logs(ctx, "web", api.LogQuery{}, &bytes.Buffer{})
	if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), `agent of node "n1"`) {
		t.Fatalf("logs without an agent: %v", err)
	}
	if err := cl.Logs(ctx, "nope", api.LogQuery{}, &bytes.Buffer{}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("logs of an unknown guest: %v", err)
	}

	agent := serveFakeLogs(t, s, "n1")
	// The agent does not hold the guest yet: unavailable, not missing.
	if err := cl.Logs(ctx, "web", api.LogQuery{}, &bytes.Buffer{}); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("logs of a guest the agent does not hold: %v", err)
	}
	agent.write("web", "hello\nworld\n")
	if got := readLogs(t, cl, "web", api.LogQuery{}); got != "hello\nworld\n" {
		t.Fatalf("logs = %q", got)
	}
	if got := readLogs(t, cl, "web", api.LogQuery{Tail: 6}); got != "world\n" {
		t.Fatalf("logs --tail 6 = %q", got)
	}
	if got := readLogs(t, cl, "web", api.LogQuery{Offset: 2}); got != "llo\nworld\n" {
		t.Fatalf("logs from offset 2 = %q", got)
	}
	// More than one chunk comes whole.
	big := strings.Repeat("0123456789abcdef", api.LogChunkMax/16*2+100)
	agent.cut("web", big)
	if got := readLogs(t, cl, "web", api.LogQuery{}); got != big {
		t.Fatalf("a log of %d bytes read as %d bytes", len(big), len(got))
	}
	agent.cut("web", "start\n")

	// Follow: new output arrives, a cut head restarts from the head, and
	// destroying the guest ends the stream.
	var out syncBuffer
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cl.Logs(fctx, "web", api.LogQuery{Follow: true}, &out) }()
	WaitFor(t, 5*time.Second, "the first output", func() bool { return out.String() == "start\n" })
	agent.write("web", "later\n")
	WaitFor(t, 5*time.Second, "output written later", func() bool { return out.String() == "start\nlater\n" })
	agent.cut("web", "cut\n")
	WaitFor(t, 5*time.Second, "output after the cut", func() bool { return out.String() == "start\nlater\ncut\n" })
	if _, err := cl.GuestAction(ctx, "web", "destroy"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follow ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end after the guest was destroyed")
	}
}

func TestGuestLogsFollowEndsWithClient(t *testing.T) {
	s, cl := startAgentServer(t)
	ctx := context.Background()
	if _, err := cl.RegisterNode(ctx, agentNode("n1"), "s3cret"); err != nil {
		t.Fatal(err)
	}
	create(t, cl, "web", "64MiB", nil)
	WaitFor(t, 5*time.Second, "placement", func() bool { return guestsOn(t, cl)["web"] == "n1" })
	agent := serveFakeLogs(t, s, "n1")
	agent.write("web", "x\n")
	var out syncBuffer
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cl.Logs(fctx, "web", api.LogQuery{Follow: true}, &out) }()
	WaitFor(t, 5*time.Second, "output", func() bool { return out.String() == "x\n" })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a follower cancelled returned %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end when its context did")
	}
}

func TestGuestLogsBadQuery(t *testing.T) {
	s, _ := startAgentServer(t)
	for _, q := range []string{"offset=-1", "tail=x", "follow=yes"} {
		resp, err := s.client.Get("http://" + s.HTTPAddr() + "/v1/guests/web/logs?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("?%s: status %d, want 400", q, resp.StatusCode)
		}
	}
}
