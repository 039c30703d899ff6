package main

import (
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/corral-dev/corral/events"
)

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReadmeListsEveryEventType: the README's table of event types is
// the code's, number for number, in order.
func TestReadmeListsEveryEventType(t *testing.T) {
	doc := readme(t)
	begin, end := strings.Index(doc, "<!-- event-types:begin -->"), strings.Index(doc, "<!-- event-types:end -->")
	if begin < 0 || end < begin {
		t.Fatal("README has no <!-- event-types:begin --> ... <!-- event-types:end --> table")
	}
	row := regexp.MustCompile("^\\| (\\d+) \\| `([a-z._]+)` \\|")
	var got []string
	for _, l := range strings.Split(doc[begin:end], "\n") {
		if m := row.FindStringSubmatch(l); m != nil {
			got = append(got, m[1]+" "+m[2])
		}
	}
	var want []string
	for _, ty := range events.Types() {
		want = append(want, strconv.Itoa(int(ty))+" "+ty.String())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("README's event types differ from the code's.\nREADME:\n%s\ncode:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestReadmeDocumentsEveryCommand: every command the binary has is named
// in the README as `corral PATH`, and every flag it takes as `--flag`.
func TestReadmeDocumentsEveryCommand(t *testing.T) {
	doc := readme(t)
	a := &app{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }, output: "table"}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		if path := c.CommandPath(); c.Runnable() && !strings.Contains(doc, "`"+path) && !strings.Contains(doc, path+" ") {
			t.Errorf("the README does not name the command %q", path)
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Hidden || f.Name == "help" {
				return
			}
			if !strings.Contains(doc, "--"+f.Name) {
				t.Errorf("the README does not document %s's flag --%s (%s)", c.CommandPath(), f.Name, f.Usage)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(a.rootCommand())
}
