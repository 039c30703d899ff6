package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// This file relays qemu guests' serial consoles (guest console). The
// agent holds at most one connection to a guest's console socket, for one
// session: a second Open is refused unless it forces, and then takes the
// console over (the first session's next exchange says it ended), as
// virsh console --force does. A reader goroutine drains the socket into a
// bounded buffer, so a guest printing to a console nobody reads never
// blocks, and every exchange returns at once: no console holds up the
// agent. A session nobody asks about for consoleIdle is closed, so a
// server that went away cannot keep the console.

const (
	consoleIdle      = 15 * time.Second
	consoleBufMax    = 256 << 10
	consoleWriteWait = time.Second
)

// ErrConsoleBusy is returned when a guest's console is attached to
// another session and the new one does not force.
var ErrConsoleBusy = errors.New("corral: console in use")

// ConsoleServer is implemented by a [Notifier] that can deliver console
// exchanges addressed to the node, one at a time, until ctx ends.
type ConsoleServer interface {
	ServeConsoles(ctx context.Context, nodeID string, exchange func(api.ConsoleRequest) api.ConsoleReply) error
}

// consoles are the sessions of one agent, by guest.
type consoles struct {
	mu       sync.Mutex
	sessions map[string]*consoleSession
}

type consoleSession struct {
	id    string
	conn  net.Conn
	idle  *time.Timer
	mu    sync.Mutex
	out   []byte
	ended string // why the guest's side ended
}

func (s *consoleSession) read() {
	buf := make([]byte, 4096)
	for {
		n, err := s.conn.Read(buf)
		s.mu.Lock()
		s.out = append(s.out, buf[:n]...)
		if over := len(s.out) - consoleBufMax; over > 0 {
			s.out = s.out[over:]
		}
		if err != nil && s.ended == "" {
			s.ended = "the guest's console closed (the guest stopped)"
		}
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// take returns up to api.ConsoleChunkMax bytes of output.
func (s *consoleSession) take() ([]byte, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.out), api.ConsoleChunkMax)
	data := append([]byte(nil), s.out[:n]...)
	s.out = s.out[n:]
	ended := ""
	if len(s.out) == 0 {
		ended = s.ended
	}
	return data, ended
}

// serveConsoles relays console sessions while the agent runs, when the
// Notifier can deliver them; it subscribes again after a break.
func (a *Agent) serveConsoles(ctx context.Context) {
	cs, ok := a.deps.Notifier.(ConsoleServer)
	if !ok {
		return
	}
	c := &consoles{sessions: map[string]*consoleSession{}}
	defer c.closeAll()
	for {
		err := cs.ServeConsoles(ctx, a.cfg.NodeID, func(r api.ConsoleRequest) api.ConsoleReply { return a.consoleExchange(c, r) })
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("serving consoles broke; subscribing again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.cfg.HeartbeatInterval):
		}
	}
}

func (c *consoles) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for g, s := range c.sessions {
		s.idle.Stop()
		s.conn.Close()
		delete(c.sessions, g)
	}
}

// drop ends guest's session if it is still s.
func (c *consoles) drop(guest string, s *consoleSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sessions[guest] == s {
		delete(c.sessions, guest)
		s.idle.Stop()
		s.conn.Close()
	}
}

func consoleError(err error) api.ConsoleReply {
	rep := api.ConsoleReply{Code: api.CodeInternal, Error: err.Error()}
	switch {
	case errors.Is(err, ErrNotHeld):
		rep.Code = api.CodeNotFound
	case errors.Is(err, events.ErrInvalid):
		rep.Code = api.CodeInvalid
	case errors.Is(err, ErrConsoleBusy):
		rep.Code = api.CodeConflict
	case errors.Is(err, api.ErrUnavailable):
		rep.Code = api.CodeUnavailable
	}
	return rep
}

// consoleExchange answers one console request. It runs on the console
// server's goroutine and never waits on the guest for long.
func (a *Agent) consoleExchange(c *consoles, r api.ConsoleRequest) api.ConsoleReply {
	if err := events.ValidateID("guest", r.Guest); err != nil {
		return consoleError(err)
	}
	if r.Session == "" || len(r.Session) > 64 {
		return consoleError(fmt.Errorf("%w: console session id must be 1 to 64 characters", events.ErrInvalid))
	}
	c.mu.Lock()
	s := c.sessions[r.Guest]
	c.mu.Unlock()
	switch {
	case r.Close:
		if s != nil && s.id == r.Session {
			c.drop(r.Guest, s)
		}
		return api.ConsoleReply{Ended: "detached"}
	case r.Open:
		if !a.concerns(r.Guest) {
			return consoleError(fmt.Errorf("%w: node %q does not run guest %q", ErrNotHeld, a.cfg.NodeID, r.Guest))
		}
		if s != nil && !r.Force {
			return consoleError(fmt.Errorf("%w: guest %q's console is attached to another session; detach that one, or attach with --force to take it over", ErrConsoleBusy, r.Guest))
		}
		path := filepath.Join(a.guestDir(r.Guest), driver.ConsoleFile)
		if _, err := os.Stat(path); err != nil {
			return consoleError(fmt.Errorf("%w: guest %q has no serial console on node %q: only a running qemu guest has one (guest logs shows the output of the others)", api.ErrUnavailable, r.Guest, a.cfg.NodeID))
		}
		conn, err := net.DialTimeout("unix", path, consoleWriteWait)
		if err != nil {
			return consoleError(fmt.Errorf("%w: guest %q's console does not answer (is the guest running?): %v", api.ErrUnavailable, r.Guest, err))
		}
		if s != nil {
			c.drop(r.Guest, s)
			a.log.Info("console taken over", "guest", r.Guest)
		}
		ns := &consoleSession{id: r.Session, conn: conn}
		ns.idle = time.AfterFunc(consoleIdle, func() { c.drop(r.Guest, ns) })
		c.mu.Lock()
		c.sessions[r.Guest] = ns
		c.mu.Unlock()
		go ns.read()
		a.log.Info("console attached", "guest", r.Guest)
		return api.ConsoleReply{}
	case s == nil || s.id != r.Session:
		return api.ConsoleReply{Ended: "the console was taken over by another session, or was idle too long"}
	}
	s.idle.Reset(consoleIdle)
	if len(r.Input) > 0 {
		_ = s.conn.SetWriteDeadline(time.Now().Add(consoleWriteWait))
		if _, err := s.conn.Write(r.Input); err != nil {
			c.drop(r.Guest, s)
			return api.ConsoleReply{Ended: "typing into the guest's console failed: " + err.Error()}
		}
	}
	data, ended := s.take()
	if ended != "" {
		c.drop(r.Guest, s)
	}
	return api.ConsoleReply{Data: data, Ended: ended}
}

var _ ConsoleServer = (*Remote)(nil)

// ServeConsoles answers the coordinator's console exchanges for nodeID
// over NATS.
func (r *Remote) ServeConsoles(ctx context.Context, nodeID string, exchange func(api.ConsoleRequest) api.ConsoleReply) error {
	return r.conn.Serve(ctx, bus.ConsoleSubject(nodeID), func(req []byte) []byte {
		var q api.ConsoleRequest
		var rep api.ConsoleReply
		if err := json.Unmarshal(req, &q); err != nil {
			rep = consoleError(fmt.Errorf("%w: console request: %v", events.ErrInvalid, err))
		} else {
			rep = exchange(q)
		}
		b, _ := json.Marshal(rep)
		return b
	})
}
