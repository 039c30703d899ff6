package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/corral-dev/corral/events"
)

// LogQuery selects what Logs reads of a guest's output.
type LogQuery struct {
	// Offset is the byte of the log file to start at.
	Offset int64
	// Tail, when positive, starts that many bytes before the end instead.
	Tail int64
	// Follow keeps reading new output until ctx ends or the guest is
	// undefined.
	Follow bool
}

func (q LogQuery) path(name string) string {
	v := url.Values{}
	if q.Offset > 0 {
		v.Set("offset", strconv.FormatInt(q.Offset, 10))
	}
	if q.Tail > 0 {
		v.Set("tail", strconv.FormatInt(q.Tail, 10))
	}
	if q.Follow {
		v.Set("follow", "1")
	}
	p := "/v1/guests/" + name + "/logs"
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	return p
}

// Logs copies a guest's output log, as its node's agent holds it, to w.
// Until the first byte arrives it tries each server in turn, and retries
// unavailable answers for c.Retry; once output flows it does not fail
// over. With Follow it returns nil when ctx ends.
func (c *Client) Logs(ctx context.Context, name string, q LogQuery, w io.Writer) error {
	if err := events.ValidateID("guest name", name); err != nil {
		return err
	}
	if q.Offset < 0 {
		return BadRequest("offset", strconv.FormatInt(q.Offset, 10), "a byte offset ≥ 0")
	}
	if q.Tail < 0 {
		return BadRequest("tail", strconv.FormatInt(q.Tail, 10), "a byte count ≥ 0")
	}
	deadline := time.Now().Add(c.Retry)
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		addr := c.addrs[attempt%len(c.addrs)]
		resp, err := c.openLogs(ctx, addr+q.path(name))
		if err == nil {
			_, err = io.Copy(w, resp.Body)
			resp.Body.Close()
			if ctx.Err() != nil && q.Follow {
				return nil
			}
			if err != nil {
				return fmt.Errorf("corral: reading guest %q's log from %s: %w", name, addr, err)
			}
			return nil
		}
		if ctx.Err() != nil {
			if q.Follow {
				return nil
			}
			return ctx.Err()
		}
		if !retryable(err) || time.Now().After(deadline) {
			return err
		}
		if attempt%len(c.addrs) == len(c.addrs)-1 {
			select {
			case <-ctx.Done():
				if q.Follow {
					return nil
				}
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
	}
}

// openLogs sends the request and returns the response once the server
// answered 200; any other answer is returned as its error.
func (c *Client) openLogs(ctx context.Context, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return nil, err
	}
	c.setAuth(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("corral: GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
		return nil, decodeAPIError(resp.StatusCode, b)
	}
	return resp, nil
}
