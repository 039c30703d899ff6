package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/coordinator/acl"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
)

// TestDecideGolden runs the scripts in testdata/decide/*.txt, one scenario
// per file, in the manner of etcd-io/raft's datadriven files. A script is a
// list of directives; each, except a setup event, is followed by "----" and
// its output up to the next blank line. -update rewrites the outputs in
// place; review them with git diff.
//
//	# a comment
//	{"type":"node.registered",...}      setup: an event applied to the state (index left out)
//	command TYPE [secret=S] [accessor=A] [node=N] [actor=A] [now=T] JSON
//	                                    Decide of the command, as TYPE's JSON; secret,
//	                                    accessor and node fill the fields the JSON does
//	                                    not carry
//	apply                               commit the last command's events, one by one
//	reapply                             commit the events apply committed once more, as a
//	                                    second proposal decided against the same state
//	                                    would be: the state machine's re-checks
//	event JSON                          commit one event (index left out) as a faulty
//	                                    leader might propose it, and say what came of it
//	schedule                            one scheduling pass as the leader makes it: the
//	                                    placements it decides (apply commits them) and
//	                                    why each guest left pending stays so
//	authorize SECRET CAPABILITY         whether the token with that secret ("-": none)
//	                                    grants the capability
//	state                               the nodes, guests and ACLs, one line each
//
// Commands run at decideNow (now= takes an RFC 3339 time) as decideActor
// unless actor= says otherwise.
func TestDecideGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/decide/*.txt")
	if len(files) == 0 {
		t.Fatal("no scenarios in testdata/decide")
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			runDecideScript(t, path)
		})
	}
}

var decideNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const decideActor = "alice"

func runDecideScript(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	st := NewState()
	var (
		out     bytes.Buffer
		last    []events.Event // the last command's events, for apply
		applied []events.Event // the last applied events, for reapply
		decided bool
	)
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		text := strings.TrimSpace(line)
		pos := fmt.Sprintf("%s:%d", path, i+1)
		switch {
		case text == "" || strings.HasPrefix(text, "#"):
			out.WriteString(line + "\n")
			continue
		case strings.HasPrefix(text, "{"):
			e, err := events.Unmarshal([]byte(text))
			if err != nil {
				t.Fatalf("%s: setup event: %v", pos, err)
			}
			if _, err := st.Apply(e); err != nil {
				t.Fatalf("%s: setup event refused: %v", pos, err)
			}
			out.WriteString(line + "\n")
			continue
		}
		var got []string
		switch verb, rest, _ := strings.Cut(text, " "); verb {
		case "command":
			cmd, actor, now := parseDecideCommand(t, pos, rest)
			got, last = decideLines(t, pos, st, cmd, actor, now)
			decided = true
		case "apply":
			if !decided {
				t.Fatalf("%s: apply before any command", pos)
			}
			got = applyLines(t, pos, st, last)
			applied, last, decided = last, nil, false
		case "reapply":
			if len(applied) == 0 {
				t.Fatalf("%s: reapply before any apply that committed events", pos)
			}
			got = applyLines(t, pos, st, applied)
		case "event":
			e, err := events.Unmarshal([]byte(rest))
			if err != nil {
				t.Fatalf("%s: event: %v", pos, err)
			}
			got = applyLines(t, pos, st, []events.Event{e})
		case "schedule":
			got, last = scheduleLines(t, pos, st)
			decided = true
		case "authorize":
			got = authorizeLines(t, pos, st, rest)
		case "state":
			got = stateLines(st)
			checkACLCheckpoint(t, pos, st)
		default:
			t.Fatalf("%s: unknown directive %q (use command, apply, reapply, event, schedule, authorize or state)", pos, verb)
		}
		// The expected output: "----", then lines up to a blank line.
		var want []string
		j := i + 1
		if j < len(lines) && lines[j] == "----" {
			for j++; j < len(lines) && lines[j] != ""; j++ {
				want = append(want, lines[j])
			}
		} else {
			j = i + 1
			want = nil
			if !*update {
				t.Errorf("%s: %s has no ---- and expected output (run with -update)", pos, text)
			}
		}
		if !*update && !slices.Equal(got, want) {
			t.Errorf("%s: %s\nwant:\n%s\ngot:\n%s", pos, text, strings.Join(want, "\n"), strings.Join(got, "\n"))
		}
		out.WriteString(line + "\n----\n")
		for _, g := range got {
			out.WriteString(g + "\n")
		}
		if j < len(lines) && lines[j] != "" {
			out.WriteString("\n") // an output ends at a blank line
		}
		i = j - 1
	}
	if *update && !bytes.Equal(out.Bytes(), data) {
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// parseDecideCommand parses "TYPE [key=value ...] JSON".
func parseDecideCommand(t *testing.T, pos, s string) (Command, string, time.Time) {
	t.Helper()
	name, rest, _ := strings.Cut(s, " ")
	brace := strings.Index(rest, "{")
	if brace < 0 {
		t.Fatalf("%s: command %s has no JSON", pos, name)
	}
	opts := map[string]string{}
	for _, kv := range strings.Fields(rest[:brace]) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("%s: %q is not key=value", pos, kv)
		}
		opts[k] = v
	}
	var cmd Command
	switch name {
	case "CreateGuest":
		cmd = new(CreateGuest)
	case "GuestAction":
		cmd = new(GuestAction)
	case "TuneGuest":
		cmd = new(TuneGuest)
	case "RegisterNode":
		cmd = new(RegisterNode)
	case "SetNodeStatus":
		cmd = new(SetNodeStatus)
	case "SetEligibility":
		cmd = new(SetEligibility)
	case "SetSchedulerConfig":
		cmd = new(SetSchedulerConfig)
	case "AgentReport":
		cmd = new(AgentReport)
	case "MigrateGuest":
		cmd = new(MigrateGuest)
	case "AbortMigration":
		cmd = new(AbortMigration)
	case "EndMigrations":
		cmd = new(EndMigrations)
	case "PlaceGuests":
		cmd = new(PlaceGuests)
	case "RegisterServer":
		cmd = new(RegisterServer)
	case "BootstrapACL":
		cmd = new(BootstrapACL)
	case "CreateToken":
		cmd = new(CreateToken)
	case "DeleteToken":
		cmd = new(DeleteToken)
	case "SetPolicy":
		cmd = new(SetPolicy)
	case "DeletePolicy":
		cmd = new(DeletePolicy)
	case "CreateJoinToken":
		cmd = new(CreateJoinToken)
	case "Enroll":
		cmd = new(Enroll)
	case "SetPartition":
		cmd = new(SetPartition)
	case "DeletePartition":
		cmd = new(DeletePartition)
	default:
		t.Fatalf("%s: unknown command type %q", pos, name)
	}
	if err := events.DecodeStrict([]byte(rest[brace:]), cmd); err != nil {
		t.Fatalf("%s: %s JSON: %v", pos, name, err)
	}
	actor, now := decideActor, decideNow
	for k, v := range opts {
		// The secrets and accessors the HTTP handler draws.
		minted := func(secret, accessor *string) bool {
			switch k {
			case "secret":
				*secret = v
			case "accessor":
				*accessor = v
			default:
				return false
			}
			return true
		}
		switch c := cmd.(type) {
		case *BootstrapACL:
			if minted(&c.Secret, &c.Accessor) {
				continue
			}
		case *CreateToken:
			if minted(&c.Secret, &c.Accessor) {
				continue
			}
		case *CreateJoinToken:
			if minted(&c.Secret, &c.Accessor) {
				continue
			}
		case *Enroll:
			if k == "secret" {
				c.Secret = v
				continue
			}
		case *RegisterNode:
			if k == "secret" {
				c.Secret = v
				continue
			}
		case *AgentReport:
			switch k {
			case "secret":
				c.Secret = v
				continue
			case "node":
				c.Node = v
				continue
			}
		}
		switch k {
		case "actor":
			actor = v
			continue
		case "now":
			at, err := time.Parse(time.RFC3339, v)
			if err != nil {
				t.Fatalf("%s: now=%s: %v", pos, v, err)
			}
			now = at
			continue
		}
		t.Fatalf("%s: %s takes no %s=", pos, name, k)
	}
	return cmd, actor, now
}

// decideLines runs Decide and describes what it returned. Decide must not
// change the state and must return the same for the same input.
func decideLines(t *testing.T, pos string, st *State, cmd Command, actor string, now time.Time) ([]string, []events.Event) {
	t.Helper()
	before := st.Clone()
	evs, err := cmd.Decide(st, now, actor)
	if !reflect.DeepEqual(before, st) {
		t.Errorf("%s: Decide changed the state", pos)
	}
	again, err2 := cmd.Decide(st, now, actor)
	if !reflect.DeepEqual(evs, again) || fmt.Sprint(err) != fmt.Sprint(err2) {
		t.Errorf("%s: Decide is not deterministic", pos)
	}
	if err != nil {
		if len(evs) != 0 {
			t.Errorf("%s: Decide returned events with its error", pos)
		}
		return []string{"error " + api.ErrorOf(err).Code + ": " + err.Error()}, nil
	}
	if len(evs) == 0 {
		return []string{"no events"}, nil
	}
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, eventLine(t, pos, e))
	}
	return out, evs
}

func eventLine(t *testing.T, pos string, e events.Event) string {
	t.Helper()
	if e.Payload == nil || e.Payload.EventType() != e.Type {
		t.Fatalf("%s: event %s carries payload %T", pos, e.Type, e.Payload)
	}
	p, err := json.Marshal(e.Payload)
	if err != nil {
		t.Fatalf("%s: %v", pos, err)
	}
	f := []string{e.Type.String()}
	if e.Guest != "" {
		f = append(f, "guest="+e.Guest)
	}
	if e.Node != "" {
		f = append(f, "node="+e.Node)
	}
	f = append(f, "actor="+e.Actor)
	if e.Reason != "" {
		f = append(f, "reason="+strconv.Quote(e.Reason))
	}
	// Only what differs from a fresh proposal at decideNow is shown.
	if !e.Time.Equal(decideNow) || e.Time.Location() != time.UTC {
		f = append(f, "time="+e.Time.String())
	}
	if e.Version != events.SchemaVersion {
		f = append(f, "v="+strconv.Itoa(e.Version))
	}
	if e.Index != 0 {
		f = append(f, "index="+strconv.FormatUint(e.Index, 10))
	}
	return strings.Join(append(f, string(p)), " ")
}

// applyLines commits evs one by one, through the encoding the log uses,
// and says what the state machine made of each.
func applyLines(t *testing.T, pos string, st *State, evs []events.Event) []string {
	t.Helper()
	if len(evs) == 0 {
		return []string{"nothing to apply"}
	}
	var out []string
	for _, e := range evs {
		b, err := events.Marshal(e)
		if err != nil {
			t.Fatalf("%s: %s: %v", pos, e.Type, err)
		}
		d, err := events.Unmarshal(b)
		if err != nil {
			t.Fatalf("%s: %s: %v", pos, e.Type, err)
		}
		before := st.Clone()
		c, err := st.Apply(d)
		if err != nil {
			if !reflect.DeepEqual(before, st) {
				t.Errorf("%s: a refused %s changed the state", pos, e.Type)
			}
			out = append(out, fmt.Sprintf("refused %s: %s: %v", e.Type, api.ErrorOf(err).Code, err))
			continue
		}
		out = append(out, fmt.Sprintf("index %d %s", c.Index, c.Type))
		// Apply keeps the scheduler's view of each node as a rebuild makes
		// it (addToNode adds a placement without one).
		for id, n := range st.Nodes {
			if sn := st.sched[id]; sn != nil && !reflect.DeepEqual(*sn, st.schedNode(n, nil)) {
				t.Errorf("%s: after %s the scheduler's view of node %s differs from its rebuild", pos, c.Type, id)
			}
		}
		// Apply keeps the ACL's indexes by secret as a rebuild makes them.
		if rebuilt := st.ACL.clone(); rebuilt != nil {
			rebuilt.reindex()
			if !reflect.DeepEqual(rebuilt, st.ACL) {
				t.Errorf("%s: after %s the ACL state differs from its rebuild", pos, c.Type)
			}
		}
	}
	return out
}

// stateLines describes the nodes and guests, one line each, sorted.
func stateLines(st *State) []string {
	out := []string{fmt.Sprintf("index %d", st.Index)}
	for _, id := range slices.Sorted(maps.Keys(st.Nodes)) {
		n := st.Nodes[id]
		mem, cpus := st.Allocated(id)
		l := fmt.Sprintf("node %s status=%s eligibility=%s allocated=%d/%d", id, n.Status, n.Eligibility, mem, cpus)
		if n.SecretHash != "" {
			l += " secret=" + n.SecretHash[:8]
		}
		if on := st.GuestsOn(id); len(on) > 0 {
			l += " guests=" + strings.Join(on, ",")
		}
		out = append(out, l)
	}
	for _, name := range slices.Sorted(maps.Keys(st.Guests)) {
		g := st.Guests[name]
		l := fmt.Sprintf("guest %s status=%s desired=%s", name, g.Status, g.Desired)
		if g.Node != "" {
			l += fmt.Sprintf(" node=%s gen=%d", g.Node, g.Generation)
		}
		if g.CPUs != "" {
			l += " cpus=" + g.CPUs
		}
		if g.LastNode != "" {
			l += " last_node=" + g.LastNode
		}
		if g.Reserve {
			l += " reserve"
		}
		if g.Paused {
			l += " paused"
		}
		if g.PID != 0 {
			l += " pid=" + strconv.Itoa(g.PID)
		}
		for _, k := range slices.Sorted(maps.Keys(g.Tuning)) {
			l += " " + k + "=" + g.Tuning[k]
		}
		for _, k := range slices.Sorted(maps.Keys(g.LiveTuning)) {
			l += " live:" + k + "=" + g.LiveTuning[k]
		}
		if g.Partition != "" {
			l += " partition=" + g.Partition
		}
		if r := g.Restarts; r.Run != 0 || r.Total != 0 || r.Avoid != "" || r.Stuck != "" || len(r.Reschedules) > 0 {
			l += fmt.Sprintf(" run=%d restarts=%d reschedules=%d", r.Run, r.Total, len(r.Reschedules))
			if r.Avoid != "" {
				l += " avoid=" + r.Avoid
			}
			if r.Stuck != "" {
				l += fmt.Sprintf(" stuck=%q", r.Stuck)
			}
		}
		if m := g.Migration; m != nil {
			l += fmt.Sprintf(" migration=%d:%s->%s:%s", m.ID, m.From, m.To, m.Phase)
		}
		if m := g.LastMigration; m != nil {
			l += fmt.Sprintf(" last_migration=%d:%s->%s:%s", m.ID, m.From, m.To, m.Phase)
			if m.Reason != "" {
				l += fmt.Sprintf("(%s)", m.Reason)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(g.TuningFailed)) {
			f := g.TuningFailed[k]
			l += fmt.Sprintf(" failed:%s=%s(gen %d: %s)", k, f.Value, f.Generation, f.Error)
		}
		out = append(out, l)
	}
	if st.Scheduler != (events.SchedulerConfig{}) {
		out = append(out, fmt.Sprintf("scheduler %s cpu_overcommit=%g memory_overcommit=%g",
			st.Scheduler.Algorithm, st.Scheduler.CPUOvercommit, st.Scheduler.MemoryOvercommit))
		if st.Scheduler.BalloonMemory {
			out[len(out)-1] += " balloon_memory"
		}
	}
	for _, name := range slices.Sorted(maps.Keys(st.Partitions)) {
		p := st.Partitions[name]
		l := fmt.Sprintf("partition %s created=%d modified=%d", name, p.CreateIndex, p.ModifyIndex)
		for _, k := range slices.Sorted(maps.Keys(p.Limits)) {
			l += " " + k + "=" + p.Limits[k]
		}
		for _, n := range slices.Sorted(maps.Keys(p.Nodes)) {
			r := p.Nodes[n]
			l += fmt.Sprintf(" %s@%d:", n, r.Index)
			for _, k := range slices.Sorted(maps.Keys(r.Applied)) {
				l += k + "=" + r.Applied[k] + ","
			}
			if r.Error != "" {
				l += "error=" + r.Error
			}
		}
		out = append(out, l)
	}
	return append(out, aclLines(st)...)
}

// authorizeLines looks a token up by its secret and checks a capability,
// as the server does for each request.
func authorizeLines(t *testing.T, pos string, st *State, args string) []string {
	t.Helper()
	secret, c, ok := strings.Cut(args, " ")
	if !ok {
		t.Fatalf("%s: authorize takes a secret and a capability", pos)
	}
	var tok *Token
	if secret != "-" {
		if tok, ok = st.TokenBySecret(secret); !ok {
			return []string{"no token has that secret"}
		}
	}
	if err := st.Authorize(tok, acl.Capability(c)); err != nil {
		var de *acl.DeniedError
		if !errors.As(err, &de) || de.Missing != acl.Capability(c) {
			t.Errorf("%s: the refusal does not carry the missing capability: %v", pos, err)
		}
		return []string{"error " + api.ErrorOf(err).Code + ": " + err.Error()}
	}
	return []string{"allowed: " + acl.TokenIdentity(tok.Name, tok.Accessor)}
}

// checkACLCheckpoint requires the ACL state to survive a checkpoint: the
// state encoded and decoded as raft snapshots and checkpoints are.
func checkACLCheckpoint(t *testing.T, pos string, st *State) {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatalf("%s: %v", pos, err)
	}
	d, err := DecodeState(b)
	if err != nil {
		t.Fatalf("%s: %v", pos, err)
	}
	if !reflect.DeepEqual(d.ACL, st.ACL) {
		t.Errorf("%s: the ACL state does not survive a checkpoint:\n%#v\nwant\n%#v", pos, d.ACL, st.ACL)
	}
}

// aclLines describes the ACL state: tokens oldest first, policies and
// join tokens by name, enrollments by node. Hashes show their first 8
// digits.
func aclLines(st *State) []string {
	a := st.ACL
	if a == nil {
		return nil
	}
	var out []string
	if a.Bootstrapped {
		out = append(out, fmt.Sprintf("acl bootstrapped at index %d", a.BootstrapIndex))
	}
	for _, v := range st.TokenViews() {
		t := a.Tokens[v.Accessor]
		l := fmt.Sprintf("token %s name=%s policies=%s secret=%s index=%d", t.Accessor, t.Name, strings.Join(t.Policies, ","), t.SecretHash[:8], t.CreateIndex)
		if t.Bootstrap {
			l += " bootstrap"
		}
		out = append(out, l)
	}
	for _, name := range slices.Sorted(maps.Keys(a.Policies)) {
		p := a.Policies[name]
		l := fmt.Sprintf("policy %s capabilities=%s index=%d/%d", name, strings.Join(acl.Strings(p.Capabilities), ","), p.CreateIndex, p.ModifyIndex)
		if p.Description != "" {
			l += " description=" + strconv.Quote(p.Description)
		}
		out = append(out, l)
	}
	for _, acc := range slices.Sorted(maps.Keys(a.JoinTokens)) {
		j := a.JoinTokens[acc]
		l := fmt.Sprintf("join-token %s node=%s secret=%s expires=%s index=%d", acc, j.Node, j.SecretHash[:8], j.ExpiresAt.Format(time.RFC3339), j.CreateIndex)
		if j.Used {
			l += fmt.Sprintf(" used=%d", j.UsedIndex)
		}
		out = append(out, l)
	}
	for _, node := range slices.Sorted(maps.Keys(a.Enrolled)) {
		en := a.Enrolled[node]
		out = append(out, fmt.Sprintf("enrolled %s fingerprint=%s join-token=%s index=%d", node, en.Fingerprint, en.JoinToken, en.Index))
	}
	return out
}

// TestACLRequestsBecomeCommands checks the conversions the HTTP handler
// uses: a TTL in seconds far out of range stays out of range instead of
// overflowing into it, and a request's Builtin flag is dropped.
func TestACLRequestsBecomeCommands(t *testing.T) {
	st := NewState()
	const acc = "0123456789abcdef0123456789abcdef"
	for secs, ok := range map[int]bool{0: true, 60: true, 604800: true, 59: false, 604801: false, -1: false,
		math.MaxInt64 / 1000: false, math.MinInt64: false, 1 << 62: false} {
		c := NewCreateJoinToken(api.CreateJoinToken{Node: "n1", TTLSeconds: secs}, "crl_x", acc)
		_, err := c.Decide(st, decideNow, decideActor)
		if (err == nil) != ok {
			t.Errorf("ttl_seconds %d: %v, want accepted %v", secs, err, ok)
		}
	}
	c := NewSetPolicy(api.ACLPolicy{Name: "read", Capabilities: []string{"guest:read"}, Builtin: true})
	if _, err := c.Decide(st, decideNow, decideActor); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("a policy marked built-in changed the built-in read: %v", err)
	}
	c = NewSetPolicy(api.ACLPolicy{Name: "deploy", Capabilities: []string{"guest:write"}, Builtin: true})
	evs, err := c.Decide(st, decideNow, decideActor)
	if err != nil || len(evs) != 1 {
		t.Fatalf("%v, %v", evs, err)
	}
	if p := evs[0].Payload.(*events.ACLPolicySet); p.Name != "deploy" || !slices.Equal(p.Capabilities, []string{"guest:write"}) {
		t.Errorf("policy_set %+v", p)
	}
}

// scheduleLines runs one scheduling pass over the state's work at
// decideNow and decides its placements.
func scheduleLines(t *testing.T, pos string, st *State) ([]string, []events.Event) {
	t.Helper()
	w := st.Work(decideNow)
	plan, err := st.Plan(w.Guests, w.Moving, decideNow)
	if err != nil {
		t.Fatalf("%s: schedule: %v", pos, err)
	}
	cmd := &PlaceGuests{}
	for _, p := range plan.Placements {
		cmd.Placements = append(cmd.Placements, Placement{Guest: p.Guest.Name, Node: p.Node, CPUs: p.CPUs.String()})
	}
	var out []string
	var evs []events.Event
	if len(cmd.Placements) > 0 {
		out, evs = decideLines(t, pos, st, cmd, PlacementActor, decideNow)
	}
	if len(w.Stalled) > 0 { // as the leader ends them
		o, e := decideLines(t, pos, st, &EndMigrations{Guests: w.Stalled}, PlacementActor, decideNow)
		out, evs = append(out, o...), append(evs, e...)
	}
	for _, f := range plan.Failures {
		out = append(out, "pending "+strings.ReplaceAll(f.String(), "\n  ", "; "))
	}
	if len(out) == 0 {
		out = []string{"nothing to place"}
	}
	return out, evs
}
