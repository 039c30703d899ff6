package simtest

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/corral-dev/corral/coordinator/bus"
)

func TestMatchSubject(t *testing.T) {
	for _, c := range []struct {
		pattern, subject string
		want             bool
	}{
		{"corral.node.n1", "corral.node.n1", true},
		{"corral.node.n1", "corral.node.n2", false},
		{"corral.heartbeat.*", "corral.heartbeat.n1", true},
		{"corral.heartbeat.*", "corral.heartbeat", false},
		{"corral.heartbeat.*", "corral.heartbeat.n1.x", false},
		{"corral.events.>", "corral.events.guest.defined", true},
		{"corral.events.>", "corral.events", false},
		{">", "a", true},
		{"*.b", "a.b", true},
		{"*.b", "a.c", false},
	} {
		if got := matchSubject(c.pattern, c.subject); got != c.want {
			t.Errorf("matchSubject(%q, %q) = %v, want %v", c.pattern, c.subject, got, c.want)
		}
	}
	for _, p := range []string{"", "a..b", "a.>.b", "a.b*", "a b"} {
		if validPattern(p) == nil {
			t.Errorf("pattern %q accepted", p)
		}
	}
}

// watch collects the indexes conn receives on subject until ctx ends.
func watch(t *testing.T, ctx context.Context, conn *Conn, subject string) (got func() []uint64) {
	var (
		mu  sync.Mutex
		idx []uint64
	)
	ready := make(chan struct{})
	go conn.Watch(ctx, subject, func() { close(ready) }, func(m bus.Msg) {
		mu.Lock()
		defer mu.Unlock()
		idx = append(idx, m.Index)
	})
	<-ready
	return func() []uint64 {
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(idx)
	}
}

func TestBusRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBus(1)
		srv, agent := b.Conn("s1"), b.Conn("n1")
		defer srv.Close()
		defer agent.Close()
		ctx := t.Context()
		if _, err := agent.Request(ctx, bus.HeartbeatSubject("n1"), nil); !errors.Is(err, bus.ErrNoResponders) {
			t.Fatalf("request with nobody listening: %v, want ErrNoResponders", err)
		}
		stop, err := srv.Handle(bus.HeartbeatPrefix+"*", func(subject string, data []byte) []byte {
			return append([]byte(subject+":"), data...)
		})
		if err != nil {
			t.Fatal(err)
		}
		rep, err := agent.Request(ctx, bus.HeartbeatSubject("n1"), []byte("hi"))
		if err != nil || string(rep) != "corral.heartbeat.n1:hi" {
			t.Fatalf("request = %q, %v", rep, err)
		}
		b.SetFault(func(d Delivery, _ *rand.Rand) Fate { return Fate{Drop: d.Reply} })
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if _, err := agent.Request(tctx, bus.HeartbeatSubject("n1"), nil); !errors.Is(err, bus.ErrTimeout) {
			t.Fatalf("request whose reply is dropped: %v, want ErrTimeout", err)
		}
		stop()
		b.SetFault(nil)
		if _, err := agent.Request(ctx, bus.HeartbeatSubject("n1"), nil); !errors.Is(err, bus.ErrNoResponders) {
			t.Fatalf("request after stop: %v, want ErrNoResponders", err)
		}
		if st := b.Stats(bus.HeartbeatSubject("n1")); st.Published != 4 || st.Delivered != 2 {
			t.Errorf("heartbeat stats = %+v, want 4 published, 2 delivered", st)
		}
	})
}

func TestBusFaults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBus(1)
		srv, n1, n2 := b.Conn("s1"), b.Conn("n1"), b.Conn("n2")
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		got1 := watch(t, ctx, n1, "corral.node.*")
		got2 := watch(t, ctx, n2, bus.NodeSubject("n2"))

		// 1 as sent; 2 dropped for n1; 3 duplicated; 4 delayed past 5.
		b.SetFault(func(d Delivery, _ *rand.Rand) Fate {
			switch {
			case d.Index == 2 && d.To == "n1":
				return Fate{Drop: true}
			case d.Index == 3:
				return Fate{Copies: 1}
			case d.Index == 4:
				return Fate{Delay: time.Second}
			}
			return Fate{}
		})
		for i := uint64(1); i <= 5; i++ {
			if err := srv.Publish(bus.NodeSubject("n1"), i, i-1, nil); err != nil {
				t.Fatal(err)
			}
		}
		if got := got1(); !slices.Equal(got, []uint64{1, 3, 3, 5}) {
			t.Errorf("before the delay n1 got %v, want [1 3 3 5]", got)
		}
		time.Sleep(time.Second)
		if got := got1(); !slices.Equal(got, []uint64{1, 3, 3, 5, 4}) {
			t.Errorf("after the delay n1 got %v, want [1 3 3 5 4]", got)
		}
		if got := got2(); len(got) > 0 {
			t.Errorf("n2 got %v of n1's updates", got)
		}
		want := SubjectStats{Published: 5, Delivered: 5, Dropped: 1, Duplicated: 1}
		if st := b.Stats(bus.NodeSubject("n1")); st != want {
			t.Errorf("stats = %+v, want %+v", st, want)
		}
		if n := b.Received("n1", "corral.node.>"); n != 5 {
			t.Errorf("n1 received %d, want 5", n)
		}

		n1.Close()
		if err := n1.Watch(ctx, "x", nil, func(bus.Msg) {}); !errors.Is(err, ErrClosed) {
			t.Errorf("Watch on a closed conn: %v, want ErrClosed", err)
		}
		srv.Close()
		n2.Close()
	})
}
