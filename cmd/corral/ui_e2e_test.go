package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/corral-dev/corral/coordinator/api"
)

// TestDevUIInChromium drives the web page in headless Chromium against
// corral dev with its agent: the page, given a read token, shows a guest
// created with the CLI as running, with its usage plotted, its tuning
// applied and its history, a guest no node takes with the reason, then the
// first as exited once the CLI stops it, without a reload; a screenshot of each state goes
// to the test's artifact directory (go test -artifacts keeps it).
//
// Chromium verifies the server's certificate: the test trusts corral
// dev's CA in an NSS database under a temporary HOME, which is where
// Chromium on Linux looks, rather than ignoring certificate errors.
func TestDevUIInChromium(t *testing.T) {
	chrome := lookChromium(t)
	certutil, err := exec.LookPath("certutil")
	if err != nil {
		t.Skip("certutil is not installed (Debian: apt-get install libnss3-tools); the test trusts corral dev's CA through it")
	}
	p, _ := startAgentDev(t, []string{"web", "huge"}, "--usage-interval", "1s")

	home := t.TempDir()
	nss := "sql:" + filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(filepath.Join(home, ".pki", "nssdb"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-d", nss, "-N", "--empty-password"},
		{"-d", nss, "-A", "-t", "C,,", "-n", "corral-dev-test", "-i", devClientFiles(p.dataDir).CA},
	} {
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	var tok api.ACLTokenSecret
	if err := json.Unmarshal([]byte(p.ok("acl", "token", "create", "--name", "ui", "--policy", "read", "-o", "json")), &tok); err != nil || tok.Secret == "" {
		t.Fatalf("read token: %v %+v", err, tok)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Env("HOME="+home),
		chromedp.WindowSize(1400, 1400),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run its sandbox as root
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelTab)
	ctx, cancel := context.WithTimeout(ctx, 3*waitTimeout)
	t.Cleanup(cancel)

	if err := chromedp.Do(ctx,
		chromedp.Navigate(p.api+"/"),
		chromedp.WaitVisible("#token"),
	); err != nil {
		t.Fatalf("open %s/ in Chromium: %v", p.api, err)
	}
	// Without a token the page asks for one and reads nothing.
	waitPage(t, ctx, "the page to ask for a token", `document.getElementById('conn').textContent`, "no token")
	// A token the cluster does not know is refused, and the page says so.
	if err := chromedp.Do(ctx,
		chromedp.SendKeys("#token", "00000000-0000-0000-0000-000000000000"),
		chromedp.Click(`#login button[type="submit"]`),
	); err != nil {
		t.Fatal(err)
	}
	waitPage(t, ctx, "the page to report the token refused", `document.getElementById('conn').textContent`, "token refused")
	if err := chromedp.Do(ctx,
		chromedp.SendKeys("#token", tok.Secret),
		chromedp.Click(`#login button[type="submit"]`),
	); err != nil {
		t.Fatal(err)
	}
	waitPage(t, ctx, "the page to follow the event stream", `document.getElementById('conn').textContent`, "live")
	waitPage(t, ctx, "the node in the nodes table", `(document.querySelector('#nodes tr[data-node="test-node"] .status')||{}).textContent||''`, "up")
	waitPage(t, ctx, "the leader in the members table", `(document.querySelector('#members .leader')||{}).textContent||''`, "leader")

	p.ok("guest", "create", "web", "--driver", "process", "--memory", "32MiB", "--", "/bin/sleep", "1000")
	status := `(document.querySelector('#guests tr[data-guest="web"] .status')||{}).textContent||''`
	waitPage(t, ctx, "web running on the page", status, api.StatusRunning)
	waitPage(t, ctx, "web's node on the page", `(document.querySelector('#guests tr[data-guest="web"] .node')||{}).textContent||''`, "test-node")
	// Usage every second: two reports make a line in the node's plots.
	waitPage(t, ctx, "web's memory plotted", `String(document.querySelectorAll('[data-plot="test-node memory"] polyline').length > 0)`, "true")
	// A tuning shows as applied once the agent wrote it.
	p.ok("schedinfo", "web", "--set", "cpu_shares=512")
	waitPage(t, ctx, "web's cpu_shares applied", `(document.querySelector('#guests tr[data-guest="web"] [data-knob="cpu_shares"]')||{}).textContent||''`, "cpu_shares=512")
	// A guest no node can take says why.
	p.ok("guest", "create", "huge", "--driver", "process", "--memory", "4TiB", "--", "/bin/sleep", "1000")
	waitPage(t, ctx, "huge pending", `(document.querySelector('#guests tr[data-guest="huge"] .status')||{}).textContent||''`, api.StatusPending)
	waitPage(t, ctx, "why huge is pending", `String(((document.querySelector('#guests tr[data-guest="huge"] .unplaced')||{}).textContent||'').includes('test-node'))`, "true")
	if err := chromedp.Do(ctx, chromedp.Click(`#guests tr[data-guest="web"]`)); err != nil {
		t.Fatal(err)
	}
	waitPage(t, ctx, "web's history", `String(document.querySelectorAll('#history tr[data-type="guest.started"]').length)`, "1")
	screenshot(t, ctx, "ui-running.png")

	p.ok("guest", "stop", "web")
	waitPage(t, ctx, "web exited on the page", status, api.StatusExited)
	waitPage(t, ctx, "web's desired state", `(document.querySelector('#guests tr[data-guest="web"] .desired')||{}).textContent||''`, api.DesiredStopped)
	waitPage(t, ctx, "the stop in the live feed", `String(document.querySelectorAll('#feed tr[data-type="guest.exited"]').length > 0)`, "true")
	if errText, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('error').hidden ? '' : document.getElementById('error').textContent`)); err != nil || errText != "" {
		t.Errorf("the page shows an error: %q %v", errText, err)
	}
	screenshot(t, ctx, "ui-stopped.png")
}

// lookChromium finds a Chromium, or skips the test saying how to get one.
func lookChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
	return ""
}

// waitPage waits until the JavaScript expression js evaluates to want on
// the page.
func waitPage(t *testing.T, ctx context.Context, what, js, want string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			errText, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('error').textContent`))
			screenshot(t, ctx, "ui-failed.png")
			t.Fatalf("waiting for %s: %s is %q (%v), want %q; the page's error box says %q", what, js, got, err, want, errText)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// screenshot writes the whole page as a PNG into the test's artifact
// directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log(fmt.Sprintf("screenshot: %s (%d bytes)", path, len(png)))
}
