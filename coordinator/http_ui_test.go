package coordinator

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/coordinator/pki"
)

// TestUIPage: the page's static files are served to a browser with no
// certificate and no token, with a policy that keeps out other origins;
// its data routes answer a token alone, on the leader and on a follower,
// and refuse, and count, a call without one; the token alone still opens
// none of the /v1/ routes, and the page has no write route.
func TestUIPage(t *testing.T) {
	sc := newSecureCluster(t, 3)
	sc.setup()
	li, leader := sc.leader()
	follower := sc.servers[(li+1)%3]
	browser := sc.httpClient(pki.Identity{})
	read := sc.token["read"]

	for _, target := range []*Server{leader, follower} {
		resp, err := browser.Get(sc.url(target, "/ui/"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `<script src="app.js"`) {
			t.Fatalf("%s: GET /ui/ without credentials: %d %.200s", target.ID(), resp.StatusCode, b)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET /ui/: Content-Security-Policy %q does not keep the page to its own server", csp)
		}
		for _, f := range []string{"/ui/app.js", "/ui/style.css"} {
			a := call(t, browser, "GET", sc.url(target, f), "", nil)
			if a.status != 200 || len(a.body) < 100 {
				t.Errorf("GET %s: %d, %d bytes", f, a.status, len(a.body))
			}
		}
		noRedirect := *browser
		noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err = noRedirect.Get(sc.url(target, "/"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
			t.Errorf("GET /: %d to %q, want a redirect to /ui/", resp.StatusCode, resp.Header.Get("Location"))
		}

		// A token alone reads the page's routes.
		a := call(t, browser, "GET", sc.url(target, "/ui/v1/guests"), read, nil)
		var guests []api.Guest
		if err := json.Unmarshal([]byte(a.body), &guests); a.status != 200 || err != nil || len(guests) != 1 || guests[0].Name != "g1" {
			t.Errorf("%s: GET /ui/v1/guests with a read token alone: %d %s", target.ID(), a.status, a.body)
		}
		a = call(t, browser, "GET", sc.url(target, "/ui/v1/cluster/members"), read, nil)
		var members []api.Member
		if err := json.Unmarshal([]byte(a.body), &members); a.status != 200 || err != nil || len(members) != 3 {
			t.Errorf("%s: GET /ui/v1/cluster/members: %d %s", target.ID(), a.status, a.body)
		}

		// Without one, or with one that is unknown, it is refused and
		// counted, and the refusal says what to do.
		for _, tok := range []string{"", "00000000-0000-0000-0000-000000000000"} {
			before := target.Denials()
			a := call(t, browser, "GET", sc.url(target, "/ui/v1/nodes"), tok, nil)
			if !a.refused() || a.code != api.CodeUnauthenticated {
				t.Errorf("%s: GET /ui/v1/nodes with token %q: %d %s, want unauthenticated", target.ID(), tok, a.status, a.body)
			}
			if tok == "" && !strings.Contains(a.body, "token") {
				t.Errorf("the refusal does not say a token is needed: %s", a.body)
			}
			if target.Denials() == before {
				t.Errorf("%s: refusal of GET /ui/v1/nodes not counted", target.ID())
			}
		}
		// The page's token opens nothing of the API proper, which still
		// wants a certificate too.
		if a := call(t, browser, "GET", sc.url(target, "/v1/guests"), sc.mgmt, nil); !a.refused() {
			t.Errorf("%s: GET /v1/guests with a token but no certificate: %d %s", target.ID(), a.status, a.body)
		}
		// And the page has no way to write.
		if a := call(t, browser, "POST", sc.url(target, "/ui/v1/guests"), sc.mgmt, map[string]any{"name": "x"}); a.status != http.StatusMethodNotAllowed {
			t.Errorf("%s: POST /ui/v1/guests: %d %s, want 405", target.ID(), a.status, a.body)
		}
	}

	// The page's event stream follows with a token alone, from a follower.
	_, last := leader.store.Bounds()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", sc.url(follower, "/ui/v1/events?follow=1&type=guest.defined&since="+
		strconv.FormatUint(last, 10)), nil)
	req.Header.Set(api.HeaderToken, read)
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("follow /ui/v1/events: %d %s", resp.StatusCode, b)
	}
	alice := sc.httpClient(pki.Identity{Role: pki.RoleClient, Name: "alice"})
	if a := call(t, alice, "POST", sc.url(leader, "/v1/guests"), sc.token["write"], map[string]any{"name": "g2", "driver": "process", "memory": "64MiB", "command": []string{"sleep", "1000"}}); a.status != 200 {
		t.Fatalf("create g2: %d %s", a.status, a.body)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"guest":"g2"`) {
		t.Fatalf("the followed stream gave %q, %v; want g2's guest.defined", line, err)
	}
}
