package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/corral-dev/corral/events"
)

// A console session relays a qemu guest's serial console between an API
// client and the guest's node: POST /v1/guests/{name}/console with the
// keystrokes as the (streamed) request body and the guest's output as the
// (streamed) response. The server moves both over the bus as
// ConsoleRequests to the node's agent, which holds the one connection to
// the guest's console socket.

// ConsoleRequest is one exchange of a console session with the agent:
// Input to type, and the output since the last exchange back.
type ConsoleRequest struct {
	Guest string `json:"guest"`
	// Session names the session; the agent relays for one at a time.
	Session string `json:"session"`
	// Open starts the session; with Force it takes over one that is
	// attached, which is otherwise refused.
	Open  bool   `json:"open,omitempty"`
	Force bool   `json:"force,omitempty"`
	Close bool   `json:"close,omitempty"`
	Input []byte `json:"input,omitempty"`
}

// ConsoleReply is the agent's answer: the guest's output, or an error.
// Ended says the session is over (taken over, the guest stopped, or idle
// too long).
type ConsoleReply struct {
	Data  []byte `json:"data,omitempty"`
	Ended string `json:"ended,omitempty"`
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

// ConsoleChunkMax bounds the output one ConsoleReply carries.
const ConsoleChunkMax = 64 << 10

// Console attaches to the serial console of guest name: what is read
// from in is typed into the guest, what the guest writes is copied to
// out. It returns when in ends (the caller detaches by ending it), the
// server ends the session, or ctx ends. force takes the console over
// from another session attached to it.
func (c *Client) Console(ctx context.Context, name string, force bool, in io.Reader, out io.Writer) error {
	if err := events.ValidateID("guest name", name); err != nil {
		return err
	}
	u := c.addrs[0] + "/v1/guests/" + name + "/console"
	if force {
		u += "?force=1"
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, in)
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, "POST", u, pr)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	c.setAuth(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("corral: POST %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
		return decodeAPIError(resp.StatusCode, b)
	}
	// When in ends the server ends the response; until then copy output.
	_, err = io.Copy(out, resp.Body)
	if err != nil && (ctx.Err() != nil || errors.Is(err, io.ErrUnexpectedEOF)) {
		return nil
	}
	if ended := resp.Trailer.Get(HeaderConsoleEnded); ended != "" {
		return fmt.Errorf("%w: %s", ErrConsoleEnded, ended)
	}
	return err
}

// ErrConsoleEnded is returned by Console when the server ended the
// session (another took the console over, the guest stopped), not the
// caller.
var ErrConsoleEnded = errors.New("corral: console session ended")

// HeaderConsoleEnded is the trailer a console response ends with when the
// server, not the client, ended the session, saying why.
const HeaderConsoleEnded = "Corral-Console-Ended"
