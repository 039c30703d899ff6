package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/events"
)

// This file relays serial consoles (guest console). A session is one
// POST /v1/guests/{name}/console, authenticated and authorized as every
// route (guest:write: whoever types on a console controls the guest):
// the request body is what the operator types, the response the guest's
// output. The server talks to the node's agent over the bus, one
// api.ConsoleRequest per exchange: the typed bytes out, the output since
// the last exchange back. Every exchange is short, so a console never
// holds the agent; the server asks again every consolePoll while nothing
// is typed, which bounds the echo delay.

const (
	consolePoll    = 50 * time.Millisecond
	consoleTimeout = 3 * time.Second
)

func (s *Server) guestConsole(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := events.ValidateID("guest name", name); err != nil {
		writeError(w, err)
		return
	}
	force := r.URL.Query().Get("force")
	if force != "" && force != "0" && force != "1" {
		writeError(w, badRequest("force", force, "use 1 or 0"))
		return
	}
	if c := callerOf(r); !c.insecure {
		done, err := s.limiter.openStream(c.key())
		if err != nil {
			s.refused(w, r, r.Pattern, c, err)
			return
		}
		defer done()
	}
	node, err := s.guestNode(name)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	var id [16]byte
	_, _ = rand.Read(id[:])
	session := hex.EncodeToString(id[:])
	rep, err := s.consoleExchange(ctx, node, api.ConsoleRequest{Guest: name, Session: session, Open: true, Force: force == "1"})
	if err != nil {
		writeError(w, err)
		return
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), consoleTimeout)
		defer cancel()
		_, _ = s.consoleExchange(cctx, node, api.ConsoleRequest{Guest: name, Session: session, Close: true})
	}()
	rc := http.NewResponseController(w)
	// Keystrokes arrive while output is sent: both ways on one HTTP/1.1
	// exchange.
	if err := rc.EnableFullDuplex(); err != nil {
		writeError(w, fmt.Errorf("corral: console needs a full-duplex connection: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Trailer", api.HeaderConsoleEnded)
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()

	input := make(chan []byte, 16)
	go func() {
		defer close(input)
		buf := make([]byte, 4096)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				select {
				case input <- append([]byte(nil), buf[:n]...):
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(consolePoll)
	defer tick.Stop()
	for {
		if len(rep.Data) > 0 {
			if _, err := w.Write(rep.Data); err != nil {
				return
			}
			_ = rc.Flush()
		}
		if rep.Ended != "" {
			w.Header().Set(api.HeaderConsoleEnded, rep.Ended)
			return
		}
		var in []byte
		select {
		case <-ctx.Done():
			return
		case b, ok := <-input:
			if !ok {
				return // the client detached
			}
			in = b
		case <-tick.C:
		}
		rep, err = s.consoleExchange(ctx, node, api.ConsoleRequest{Guest: name, Session: session, Input: in})
		if err != nil {
			w.Header().Set(api.HeaderConsoleEnded, err.Error())
			return
		}
	}
}

// consoleExchange sends one console request to node's agent.
func (s *Server) consoleExchange(ctx context.Context, node string, req api.ConsoleRequest) (api.ConsoleReply, error) {
	b, _ := json.Marshal(req)
	rctx, cancel := context.WithTimeout(ctx, consoleTimeout)
	defer cancel()
	data, err := s.bus.Request(rctx, bus.ConsoleSubject(node), b)
	switch {
	case ctx.Err() != nil:
		return api.ConsoleReply{}, ctx.Err()
	case errors.Is(err, bus.ErrNoResponders):
		return api.ConsoleReply{}, fmt.Errorf("%w: the agent of node %q is not connected, so guest %q's console cannot be reached; check that corral agent runs there", api.ErrUnavailable, node, req.Guest)
	case err != nil:
		return api.ConsoleReply{}, fmt.Errorf("%w: guest %q's console on node %q: %v", api.ErrUnavailable, req.Guest, node, err)
	}
	var rep api.ConsoleReply
	if err := json.Unmarshal(data, &rep); err != nil {
		return api.ConsoleReply{}, fmt.Errorf("corral: node %q answered a console request with something unreadable: %w", node, err)
	}
	if rep.Error != "" {
		return api.ConsoleReply{}, &api.APIError{Code: rep.Code, Message: fmt.Sprintf("node %q: %s", node, rep.Error)}
	}
	if len(rep.Data) > api.ConsoleChunkMax {
		return api.ConsoleReply{}, fmt.Errorf("corral: node %q answered a console request with %d bytes, more than %d", node, len(rep.Data), api.ConsoleChunkMax)
	}
	return rep, nil
}
