package driver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// QMP is a client of one QEMU's QMP monitor, speaking the JSON protocol
// directly: a greeting, qmp_capabilities, then one command at a time, each
// answered by a "return" or an "error", with asynchronous events in
// between. It connects on first use and again after any error, so it
// survives QEMU being busy and the agent adopting a running VM. Methods
// may be called from any goroutine; commands are serialised.
type QMP struct {
	path string

	mu       sync.Mutex
	conn     net.Conn
	r        *bufio.Reader
	id       uint64
	shutdown string // reason of the last SHUTDOWN event seen
	closed   bool
}

// QMPError is an error QEMU answered a command with.
type QMPError struct {
	Command string
	Class   string // e.g. "GenericError", "DeviceNotActive"
	Desc    string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("corral: qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// NewQMP returns a client for the QMP socket at path. It does not connect.
func NewQMP(path string) *QMP { return &QMP{path: path} }

// Path is the socket the client connects to.
func (q *QMP) Path() string { return q.path }

type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	ID    json.RawMessage `json:"id"`
}

// Execute runs command with args (nil for none) and decodes its return
// value into result (nil to ignore it).
func (q *QMP) Execute(ctx context.Context, command string, args, result any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("corral: qmp %s: client closed", command)
	}
	if q.conn == nil {
		if err := q.dial(ctx); err != nil {
			return err
		}
	}
	ret, err := q.exec(ctx, command, args)
	if err != nil {
		var qe *QMPError
		if !errors.As(err, &qe) {
			q.drop() // the stream may be out of step: start afresh next time
		}
		return err
	}
	if result != nil {
		if err := json.Unmarshal(ret, result); err != nil {
			return fmt.Errorf("corral: qmp %s: decode %s: %w", command, ret, err)
		}
	}
	return nil
}

func (q *QMP) dial(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", q.path)
	if err != nil {
		return fmt.Errorf("corral: qmp: %w", err)
	}
	q.conn, q.r = conn, bufio.NewReader(conn)
	q.setDeadline(ctx)
	m, err := q.read()
	if err == nil && m.QMP == nil {
		err = fmt.Errorf("no greeting")
	}
	if err == nil {
		_, err = q.exec(ctx, "qmp_capabilities", nil)
	}
	if err != nil {
		q.drop()
		return fmt.Errorf("corral: qmp: handshake on %s: %w", q.path, err)
	}
	return nil
}

func (q *QMP) setDeadline(ctx context.Context) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(30 * time.Second)
	}
	_ = q.conn.SetDeadline(dl)
}

// exec sends one command and reads until its answer, noting events.
func (q *QMP) exec(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.setDeadline(ctx)
	q.id++
	id := strconv.FormatUint(q.id, 10)
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("corral: qmp %s: %w", command, err)
	}
	for {
		m, err := q.read()
		if err != nil {
			return nil, fmt.Errorf("corral: qmp %s: %w", command, err)
		}
		if m.Event != "" || string(m.ID) != strconv.Quote(id) {
			continue
		}
		if m.Error != nil {
			return nil, &QMPError{Command: command, Class: m.Error.Class, Desc: m.Error.Desc}
		}
		return m.Return, nil
	}
}

// read reads one message, remembering the reason of SHUTDOWN events.
func (q *QMP) read() (*qmpMessage, error) {
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var m qmpMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, fmt.Errorf("bad message %q: %w", line, err)
	}
	if m.Event == "SHUTDOWN" {
		var d struct {
			Reason string `json:"reason"`
		}
		if json.Unmarshal(m.Data, &d) == nil {
			q.shutdown = d.Reason
		}
	}
	return &m, nil
}

func (q *QMP) drop() {
	if q.conn != nil {
		q.conn.Close()
		q.conn, q.r = nil, nil
	}
}

// shutdownReason reads what QEMU sent before it exited, for at most wait,
// and returns the reason of the last SHUTDOWN event ("" if none was seen).
func (q *QMP) shutdownReason(wait time.Duration) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.conn != nil {
		_ = q.conn.SetDeadline(time.Now().Add(wait))
		for {
			if _, err := q.read(); err != nil {
				break
			}
		}
		q.drop()
	}
	return q.shutdown
}

// Close closes the connection; later commands fail.
func (q *QMP) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.drop()
	return nil
}

// Status returns the VM's run state: "running", "paused",
// "shutdown", "inmigrate", ...
func (q *QMP) Status(ctx context.Context) (string, error) {
	var r struct {
		Status string `json:"status"`
	}
	err := q.Execute(ctx, "query-status", nil, &r)
	return r.Status, err
}

// Stop pauses the VM's vCPUs.
func (q *QMP) Stop(ctx context.Context) error { return q.Execute(ctx, "stop", nil, nil) }

// Cont resumes the VM's vCPUs.
func (q *QMP) Cont(ctx context.Context) error { return q.Execute(ctx, "cont", nil, nil) }

// Balloon returns the guest's memory as the balloon device sees it, in
// bytes.
func (q *QMP) Balloon(ctx context.Context) (int64, error) {
	var r struct {
		Actual int64 `json:"actual"`
	}
	err := q.Execute(ctx, "query-balloon", nil, &r)
	return r.Actual, err
}

// SetBalloon asks the guest's balloon driver to leave it bytes of memory.
// It returns at once; the guest gets there at its own pace ([QMP.Balloon]
// tells), or never without a balloon driver.
func (q *QMP) SetBalloon(ctx context.Context, bytes int64) error {
	return q.Execute(ctx, "balloon", map[string]int64{"value": bytes}, nil)
}

// Powerdown presses the ACPI power button: a guest OS that listens shuts
// down, and QEMU (-no-reboot) exits.
func (q *QMP) Powerdown(ctx context.Context) error {
	return q.Execute(ctx, "system_powerdown", nil, nil)
}

// Quit makes QEMU exit at once, without asking the guest OS.
func (q *QMP) Quit(ctx context.Context) error {
	err := q.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, io.EOF) {
		// QEMU may close the socket before its answer is read.
		return nil
	}
	return err
}

// VCPUThreads returns the host thread that runs each vCPU, by vCPU index
// (query-cpus-fast).
func (q *QMP) VCPUThreads(ctx context.Context) (map[int]int, error) {
	var cpus []struct {
		Index  int `json:"cpu-index"`
		Thread int `json:"thread-id"`
	}
	if err := q.Execute(ctx, "query-cpus-fast", nil, &cpus); err != nil {
		return nil, err
	}
	out := make(map[int]int, len(cpus))
	for _, c := range cpus {
		out[c.Index] = c.Thread
	}
	return out, nil
}
