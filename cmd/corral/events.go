package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/corral-dev/corral/coordinator/api"

	"github.com/spf13/cobra"

	"github.com/corral-dev/corral/events"
)

func (a *app) eventsCommand() *cobra.Command {
	var q api.EventQuery
	var usage bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print events from the log, optionally following new ones",
		Long: `Print committed events in index order, from the event store of the server.

With -o json each event is one JSON object on its own line (ndjson), exactly the
encoding the API streams, with at least index, type, time and actor.
With --follow it keeps printing new events until interrupted, failing over to
the next --addr when a server goes away, with no event skipped or repeated.
Asking for events that retention already dropped is an error that names the
first retained index.

The table leaves out node.usage, which every node reports each usage
interval: --usage shows it (its DETAILS sum the node's guests), as does
--type naming it; -o json always carries every event.`,
		Example: `  corral events
  corral events --since 120 --follow -o json
  corral events --type guest.tuned,guest.exited --guest web
  corral events --node n1 --follow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkEventQuery(q); err != nil {
				return err
			}
			c, err := a.readClient()
			if err != nil {
				return err
			}
			out := a.eventWriter(q.Follow, true)
			out.hideUsage = !usage && !slices.ContainsFunc(q.Types, func(t string) bool { return strings.TrimSpace(t) == events.TypeNodeUsage.String() })
			err = c.Events(cmd.Context(), q, out.write)
			var ae *api.APIError
			if err != nil && out.n == 0 && !cmd.Flags().Changed("since") && errors.As(err, &ae) && ae.Code == api.CodeGone && ae.FirstIndex > 0 {
				// No --since means "from the oldest retained event", not
				// "from index 1": start where retention left off.
				q.Since = ae.FirstIndex - 1
				err = c.Events(cmd.Context(), q, out.write)
			}
			if q.Follow && cmd.Context().Err() != nil {
				err = nil // interrupted on purpose
			}
			return errorsJoin(err, out.flush())
		},
	}
	f := cmd.Flags()
	f.Uint64Var(&q.Since, "since", 0, "print events after this index")
	f.BoolVarP(&q.Follow, "follow", "f", false, "keep printing new events until interrupted")
	f.StringSliceVar(&q.Types, "type", nil, "only events of these types, comma-separated: "+typeList())
	f.StringVar(&q.Guest, "guest", "", "only events about this guest")
	f.StringVar(&q.Node, "node", "", "only events about this node")
	f.BoolVar(&usage, "usage", false, "show node.usage in the table too (-o json always has it)")
	return a.clientFlags(cmd)
}

func typeList() string {
	var names []string
	for _, t := range events.Types() {
		names = append(names, t.String())
	}
	return strings.Join(names, ", ")
}

// checkEventQuery refuses filters the server would refuse, before asking.
func checkEventQuery(q api.EventQuery) error {
	for _, t := range q.Types {
		if _, err := events.ParseType(strings.TrimSpace(t)); err != nil {
			return err
		}
	}
	if q.Guest != "" {
		if err := events.ValidateID("guest", q.Guest); err != nil {
			return err
		}
	}
	if q.Node != "" {
		if err := events.ValidateID("node", q.Node); err != nil {
			return err
		}
	}
	return nil
}

// errorsJoin returns the command's error, or else the one from flushing
// its output.
func errorsJoin(err, flushErr error) error {
	if err != nil {
		return err
	}
	return flushErr
}

// eventWriter prints events as ndjson (-o json) or as a table. A followed
// stream cannot wait for the widest cell, so its table has fixed columns;
// a finite one is aligned with a tabwriter.
type eventWriter struct {
	w       io.Writer
	json    bool
	stream  bool
	subject bool // print the SUBJECT column
	// hideUsage leaves node.usage out of the table (not of -o json).
	hideUsage bool
	tab       *table
	header    bool
	n         int
}

func (a *app) eventWriter(follow, subject bool) *eventWriter {
	return &eventWriter{w: a.stdout, json: a.json(), stream: follow, subject: subject}
}

func (ew *eventWriter) cells(e events.Event) []string {
	c := []string{formatUint(e.Index), formatTime(e.Time), e.Type.String(), e.Actor}
	if ew.subject {
		c = append(c, subjectOf(e))
	}
	return append(c, eventDetails(e))
}

func (ew *eventWriter) headers() []string {
	h := []string{"INDEX", "TIME", "TYPE", "ACTOR"}
	if ew.subject {
		h = append(h, "SUBJECT")
	}
	return append(h, "DETAILS")
}

var streamWidths = []int{7, 25, 21, 20, 22}

func (ew *eventWriter) write(e events.Event) error {
	ew.n++
	if ew.hideUsage && !ew.json && e.Type == events.TypeNodeUsage {
		return nil
	}
	if ew.json {
		b, err := events.Marshal(e)
		if err != nil {
			return err
		}
		_, err = ew.w.Write(append(b, '\n'))
		return err
	}
	if !ew.stream {
		if ew.tab == nil {
			ew.tab = newTable(ew.w, ew.headers()...)
		}
		ew.tab.row(ew.cells(e)...)
		return nil
	}
	if !ew.header {
		ew.header = true
		if err := ew.fixed(ew.headers()); err != nil {
			return err
		}
	}
	return ew.fixed(ew.cells(e))
}

func (ew *eventWriter) fixed(cells []string) error {
	var b strings.Builder
	for i, c := range cells {
		c = clean(c)
		if i < len(cells)-1 {
			fmt.Fprintf(&b, "%-*s ", streamWidths[min(i, len(streamWidths)-1)], c)
		} else {
			b.WriteString(c)
		}
	}
	b.WriteByte('\n')
	_, err := io.WriteString(ew.w, b.String())
	return err
}

// flush finishes a table; with no event at all it still prints the header.
func (ew *eventWriter) flush() error {
	if ew.json {
		return nil
	}
	if ew.stream {
		if !ew.header {
			return ew.fixed(ew.headers())
		}
		return nil
	}
	if ew.tab == nil {
		ew.tab = newTable(ew.w, ew.headers()...)
	}
	return ew.tab.flush()
}
