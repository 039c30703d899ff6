package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/bus"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// This file answers reads of the guests' output logs, which the drivers
// write below each guest's directory: the coordinator asks, the agent
// reads the file and answers with the bytes.

// ErrNotHeld is returned for a log read about a guest the agent neither
// holds nor is asked to run.
var ErrNotHeld = errors.New("corral: guest not held by this node's agent")

// maxLogRead bounds the bytes one log read returns.
const maxLogRead = api.LogChunkMax

// LogServer is implemented by a [Notifier] that can also deliver log reads
// addressed to the node. ServeLogs calls read for each one, one at a time,
// until ctx ends or the subscription breaks, and returns why it stopped.
type LogServer interface {
	ServeLogs(ctx context.Context, nodeID string, read func(LogRead) LogChunk) error
}

// LogRead asks for part of a guest's log.
type LogRead struct {
	Guest  string
	Offset int64
	// Tail, when positive, starts that many bytes before the end instead
	// of at Offset.
	Tail int64
	Max  int
}

// LogChunk is what a LogRead returns; Err is set when it failed.
type LogChunk struct {
	Data []byte
	// Next is the offset after Data; Size the file's size when read.
	Next, Size int64
	// Truncated says the file was shorter than Offset, so its head was
	// cut: Data starts at offset 0.
	Truncated bool
	Err       error
}

// serveLogs answers log reads while the agent runs, when the Notifier can
// deliver them; it subscribes again after a break.
func (a *Agent) serveLogs(ctx context.Context) {
	ls, ok := a.deps.Notifier.(LogServer)
	if !ok {
		return
	}
	for {
		err := ls.ServeLogs(ctx, a.cfg.NodeID, a.readLog)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("serving log reads broke; subscribing again", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.cfg.HeartbeatInterval):
		}
	}
}

// readLog answers one log read. It runs on the log server's goroutine.
func (a *Agent) readLog(r LogRead) LogChunk {
	// The name becomes a path: it must be an ID, never "..", "a/b" or "".
	if err := events.ValidateID("guest", r.Guest); err != nil {
		return LogChunk{Err: err}
	}
	if !a.concerns(r.Guest) {
		return LogChunk{Err: fmt.Errorf("%w: node %q does not run guest %q (yet)", ErrNotHeld, a.cfg.NodeID, r.Guest)}
	}
	return readLogFile(filepath.Join(a.guestDir(r.Guest), driver.LogFile), r)
}

// readLogFile reads what r asks of the log at path. A log that does not
// exist yet reads as empty. The drivers cut the file's head to cap it, so
// an offset past the end means the reader lost its place: it starts again
// at the head and says so.
func readLogFile(path string, r LogRead) LogChunk {
	if r.Offset < 0 || r.Tail < 0 {
		return LogChunk{Err: fmt.Errorf("%w: log offset %d and tail %d must not be negative", events.ErrInvalid, r.Offset, r.Tail)}
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return LogChunk{Truncated: r.Offset > 0}
	}
	if err != nil {
		return LogChunk{Err: fmt.Errorf("corral: open guest log: %w", err)}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return LogChunk{Err: fmt.Errorf("corral: guest log: %w", err)}
	}
	size := st.Size()
	off, truncated := r.Offset, false
	switch {
	case r.Tail > 0:
		off = max(0, size-r.Tail)
	case off > size:
		off, truncated = 0, true
	}
	n := r.Max
	if n <= 0 || n > maxLogRead {
		n = maxLogRead
	}
	buf := make([]byte, min(int64(n), size-off))
	// The file may shrink under us; a short read is what there is.
	k, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return LogChunk{Err: fmt.Errorf("corral: read guest log: %w", err)}
	}
	return LogChunk{Data: buf[:k], Next: off + int64(k), Size: size, Truncated: truncated}
}

var _ LogServer = (*Remote)(nil)

// ServeLogs answers the coordinator's log reads for nodeID over NATS.
func (r *Remote) ServeLogs(ctx context.Context, nodeID string, read func(LogRead) LogChunk) error {
	return r.conn.Serve(ctx, bus.LogsSubject(nodeID), func(req []byte) []byte {
		var q api.LogRequest
		var c LogChunk
		if err := json.Unmarshal(req, &q); err != nil {
			c.Err = fmt.Errorf("%w: log request: %v", events.ErrInvalid, err)
		} else {
			c = read(LogRead{Guest: q.Guest, Offset: q.Offset, Tail: q.Tail, Max: q.Max})
		}
		rep := api.LogReply{Data: c.Data, Next: c.Next, Size: c.Size, Truncated: c.Truncated}
		if c.Err != nil {
			rep = api.LogReply{Code: api.CodeInternal, Error: c.Err.Error()}
			switch {
			case errors.Is(c.Err, ErrNotHeld):
				rep.Code = api.CodeNotFound
			case errors.Is(c.Err, events.ErrInvalid):
				rep.Code = api.CodeInvalid
			}
		}
		b, _ := json.Marshal(rep)
		return b
	})
}
