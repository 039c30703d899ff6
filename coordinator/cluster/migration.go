package cluster

import (
	"fmt"
	"strconv"
	"time"

	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/scheduler"
)

// This file is migration in the state machine: the command that asks for
// one, the events of its sequence (events/migration.go), and what each
// node must run meanwhile. While a guest migrates it holds capacity on
// both nodes: on its own (Guest.Node: the source until the switch, the
// target after it) and on the other (otherNode), until guest.migrated or
// guest.migration_aborted ends the migration. The switch is the commit
// point: before it the source's copy is the guest and the target's is
// destroyed on any failure; after it the target's is, and the source's is
// destroyed.

// Migration is a guest's migration, as the API shows it.
type Migration = api.Migration

// MigrateGuest asks for a guest to move to another node, live for a
// running QEMU guest, by a clean stop and start otherwise or when asked
// (Offline). The target is To, checked as a placement, or the node the
// scheduler picks among the others.
type MigrateGuest struct{ api.MigrateGuest }

func (c *MigrateGuest) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := events.ValidateID("guest name", c.Name); err != nil {
		return nil, err
	}
	g, err := s.guest(c.Name)
	if err != nil {
		return nil, err
	}
	if m := g.Migration; m != nil {
		return nil, fmt.Errorf("%w: guest %q is already migrating from %q to %q (%s): wait for it to end, or abort it with corral guest migrate --abort", api.ErrConflict, g.Name, m.From, m.To, m.Phase)
	}
	if g.Node == "" {
		return nil, fmt.Errorf("%w: guest %q is not placed on any node: start it and the scheduler places it; migrate moves a placed guest", api.ErrConflict, g.Name)
	}
	if n := s.Nodes[g.Node]; n == nil || n.Status != NodeStatusUp {
		return nil, fmt.Errorf("%w: guest %q is on node %q, which is down: its agent cannot hand it over; the scheduler moves the guests of a lost node", api.ErrConflict, g.Name, g.Node)
	}
	offline := c.Offline || g.Driver != events.DriverQEMU
	if !offline && g.Status != StatusRunning {
		return nil, fmt.Errorf("%w: guest %q is %s, not running: a live migration moves a running QEMU guest; use --offline to move it as it is", api.ErrConflict, g.Name, g.Status)
	}
	to, cpus, err := s.migrationTarget(g, c.To, now)
	if err != nil {
		return nil, err
	}
	e := subject(events.New(now, actor, &events.GuestMigrationRequested{From: g.Node, To: to, Generation: g.Generation, CPUs: cpus, Offline: offline}), g.Name, to)
	e.Reason = c.Reason
	return []events.Event{e}, nil
}

// migrationTarget picks the node g moves to: to, when named, if it takes
// g; else the scheduler's choice among the nodes g is not on.
func (s *State) migrationTarget(g *Guest, to string, now time.Time) (string, string, error) {
	if to != "" {
		if err := events.ValidateID("to", to); err != nil {
			return "", "", err
		}
		if to == g.Node {
			return "", "", &events.FieldError{Field: "to", Value: to, Want: fmt.Sprintf("name a node other than %q, which guest %q is on", g.Node, g.Name)}
		}
		if _, err := s.node(to); err != nil {
			return "", "", err
		}
	}
	in := s.PlanInput([]*Guest{g}, map[string]bool{g.Name: true})
	sg := &in.Pending[0]
	sg.Prefer = ""
	sg.Constraints = append(sg.Constraints[:len(sg.Constraints):len(sg.Constraints)], scheduler.Constraint{Key: NodeLabel, Op: scheduler.OpNotEqual, Value: g.Node})
	if to != "" {
		sg.Constraints = append(sg.Constraints, scheduler.Constraint{Key: NodeLabel, Op: scheduler.OpEqual, Value: to})
	}
	plan, _, err := in.Schedule(now)
	if err != nil {
		return "", "", err
	}
	if len(plan.Placements) != 1 {
		why := "no node takes it"
		if len(plan.Failures) > 0 {
			why = plan.Failures[0].Headline()
		}
		where := "another node"
		if to != "" {
			where = "node " + to
		}
		return "", "", fmt.Errorf("%w: guest %q cannot migrate to %s: %s; free capacity there or name another node with --to", api.ErrConflict, g.Name, where, why)
	}
	p := plan.Placements[0]
	return p.Node, p.CPUs.String(), nil
}

// AbortMigration ends a guest's migration before its switch; the source
// runs on.
type AbortMigration struct{ api.AbortMigration }

func (c *AbortMigration) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	if err := events.ValidateID("guest name", c.Name); err != nil {
		return nil, err
	}
	g, err := s.guest(c.Name)
	if err != nil {
		return nil, err
	}
	m := g.Migration
	if m == nil {
		return nil, fmt.Errorf("%w: guest %q is not migrating", api.ErrConflict, g.Name)
	}
	if m.Phase == api.MigrationSwitched {
		return nil, fmt.Errorf("%w: guest %q already switched over to node %q: the migration only waits for node %q to release its copy", api.ErrConflict, g.Name, m.To, m.From)
	}
	reason := c.Reason
	if reason == "" {
		reason = "aborted by " + actor
	}
	e := subject(events.New(now, actor, &events.GuestMigrationAborted{Migration: m.ID, Reason: reason}), g.Name, m.To)
	e.Reason = c.Reason
	return []events.Event{e}, nil
}

// EndMigrations ends the migrations a lost node holds up (Work's
// Stalled): one not switched over is aborted, one switched over is
// finished for its lost source, whose agent destroys what the log no
// longer names when it returns.
type EndMigrations struct {
	Guests []string `json:"guests"`
}

func (c *EndMigrations) Decide(s *State, now time.Time, actor string) ([]events.Event, error) {
	var out []events.Event
	for _, name := range c.Guests {
		g := s.Guests[name]
		if g == nil || g.Migration == nil {
			continue
		}
		m := g.Migration
		down := s.otherNode(g)
		var p events.Payload = &events.GuestMigrationAborted{Migration: m.ID, Reason: "node " + down + " is down"}
		if m.Phase == api.MigrationSwitched {
			p = &events.GuestMigrated{Generation: m.FromGeneration, Migration: m.ID}
		}
		e := subject(events.New(now, actor, p), name, m.To)
		e.Reason = "node " + down + " is down"
		out = append(out, e)
	}
	return out, nil
}

// otherNode is the node a migrating guest holds capacity on besides its
// own: the target until the switch, the source after it.
func (s *State) otherNode(g *Guest) string {
	m := g.Migration
	switch {
	case m == nil:
		return ""
	case g.Node == m.From:
		return m.To
	}
	return m.From
}

func (s *State) setMigrating(name string, on bool) {
	if s.migrating == nil {
		return
	}
	if on {
		s.migrating[name] = true
	} else {
		delete(s.migrating, name)
	}
}

// migratingOn returns the guests that hold capacity on node id as the
// other end of a migration.
func (s *State) migratingOn(id string) []*Guest {
	var out []*Guest
	for name := range s.migrating {
		if g := s.Guests[name]; g != nil && s.otherNode(g) == id {
			out = append(out, g)
		}
	}
	return out
}

// migration returns the guest of a report and a copy of its migration in
// progress, checking that the report is about that migration and comes
// from the node at the end endOf names.
func (s *State) migration(e *events.Event, id uint64, node string, endOf func(*Guest) string) (*Guest, *Migration, error) {
	g, err := s.guest(e.Guest)
	if err != nil {
		return nil, nil, err
	}
	m := g.Migration
	if m == nil || m.ID != id {
		return nil, nil, fmt.Errorf("%w: report about migration %d of guest %q, which is not migrating by it", api.ErrConflict, id, g.Name)
	}
	if end := endOf(g); node != end {
		return nil, nil, fmt.Errorf("%w: node %q reported about migration %d of guest %q, whose end that report is about is node %q",
			api.ErrPermission, node, id, g.Name, end)
	}
	c := *m // replaced, never changed in place: clones share it
	return g, &c, nil
}

func (s *State) applyMigrationRequested(idx uint64, e *events.Event, p *events.GuestMigrationRequested) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if e.Node != p.To {
		return fmt.Errorf("%w: migration to %q carries subject node %q", events.ErrInvalid, p.To, e.Node)
	}
	g, err := s.guest(e.Guest)
	if err != nil {
		return err
	}
	if g.Migration != nil {
		return fmt.Errorf("%w: guest %q is already migrating (migration %d)", api.ErrConflict, g.Name, g.Migration.ID)
	}
	if g.Node != p.From || g.Generation != p.Generation {
		return fmt.Errorf("%w: migration of guest %q from %q generation %d, but it is placed on %q generation %d",
			api.ErrConflict, g.Name, p.From, p.Generation, g.Node, g.Generation)
	}
	if err := s.checkPlacement(g, &events.GuestPlaced{Node: p.To, CPUs: p.CPUs}); err != nil {
		return err
	}
	if p.Offline && g.Status != StatusRunning {
		// Nothing runs to be stopped: the guest is placed there now.
		s.placeOn(idx, g, p.To, p.CPUs)
		g.LastMigration = &Migration{ID: idx, From: p.From, To: p.To, FromGeneration: p.Generation, Offline: true, Phase: api.MigrationDone, EndIndex: idx}
		return nil
	}
	if !p.Offline && (g.Status != StatusRunning || g.Driver != events.DriverQEMU) {
		return fmt.Errorf("%w: guest %q is a %s guest %s: only a running QEMU guest migrates live", api.ErrConflict, g.Name, g.Driver, g.Status)
	}
	phase := api.MigrationRequested
	if p.Offline {
		phase = api.MigrationStopping
	}
	g.Migration = &Migration{ID: idx, From: p.From, To: p.To, FromGeneration: p.Generation, CPUs: p.CPUs, Offline: p.Offline, Phase: phase}
	g.ModifyIndex = idx
	s.setMigrating(g.Name, true)
	s.refreshNode(p.To)
	return nil
}

func (s *State) applyMigrationTargetReady(idx uint64, e *events.Event, p *events.GuestMigrationTargetReady) error {
	g, m, err := s.migration(e, p.Generation, p.Node, migrationTo)
	if err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if m.Phase != api.MigrationRequested {
		return fmt.Errorf("%w: migration %d of guest %q is %s: a target is ready once", api.ErrConflict, m.ID, g.Name, m.Phase)
	}
	m.Phase, m.Address = api.MigrationTargetReady, p.Address
	g.Migration, g.ModifyIndex = m, idx
	return nil
}

func (s *State) applyMigrationProgress(e *events.Event, p *events.GuestMigrationProgress) error {
	g, m, err := s.migration(e, p.Migration, p.Node, migrationFrom)
	if err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	// The source's last report (completed, with QEMU's downtime) may
	// come after the target's switch: the two ends race to the log.
	late := m.Phase == api.MigrationSwitched && p.Status == events.MigrationCompleted
	if p.Generation != m.FromGeneration || (m.Phase != api.MigrationTargetReady && !late) {
		return fmt.Errorf("%w: progress of migration %d of guest %q generation %d, but it is %s from generation %d", api.ErrConflict, m.ID, g.Name, p.Generation, m.Phase, m.FromGeneration)
	}
	c := *p
	m.Progress = &c
	g.Migration = m
	return nil
}

func (s *State) applyMigrationSwitched(idx uint64, e *events.Event, p *events.GuestMigrationSwitched) error {
	g, m, err := s.migration(e, p.Generation, p.Node, migrationTo)
	if err != nil {
		return err
	}
	if m.Phase != api.MigrationTargetReady {
		return fmt.Errorf("%w: migration %d of guest %q is %s: it switches over once, after its target was ready", api.ErrConflict, m.ID, g.Name, m.Phase)
	}
	from := g.Node
	s.setNode(g.Name, from, m.To)
	m.Phase, m.CPUs = api.MigrationSwitched, g.CPUs // CPUs: those still held on the source
	cpus := g.Migration.CPUs
	g.Migration = m
	g.Node, g.Generation, g.CPUs = m.To, m.ID, cpus
	g.Status, g.PID = StatusRunning, p.PID
	g.Applied, g.TuningFailed, g.Usage = nil, nil, nil
	g.Balloon, g.BalloonNoncompliant = nil, nil
	g.Restarts.Run = 0
	g.ModifyIndex = idx
	s.refreshNode(from)
	s.refreshNode(m.To)
	return nil
}

func (s *State) applyMigrated(idx uint64, e *events.Event, p *events.GuestMigrated) error {
	g, m, err := s.migration(e, p.Migration, p.Node, func(g *Guest) string {
		if p.Node == "" {
			return "" // the leader, for a lost source
		}
		return migrationFrom(g)
	})
	if err != nil {
		return err
	}
	if m.Phase != api.MigrationSwitched || p.Generation != m.FromGeneration {
		return fmt.Errorf("%w: migration %d of guest %q is %s: the source releases it after the switch", api.ErrConflict, m.ID, g.Name, m.Phase)
	}
	s.endMigration(idx, g, m, api.MigrationDone, "")
	return nil
}

func (s *State) applyMigrationAborted(idx uint64, e *events.Event, p *events.GuestMigrationAborted) error {
	g, err := s.guest(e.Guest)
	if err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	m := g.Migration
	if m == nil || m.ID != p.Migration {
		return fmt.Errorf("%w: abort of migration %d of guest %q, which is not migrating by it", api.ErrConflict, p.Migration, g.Name)
	}
	if p.Node != "" && p.Node != m.From && p.Node != m.To {
		return fmt.Errorf("%w: node %q aborted migration %d of guest %q, which moves it from %q to %q", api.ErrPermission, p.Node, m.ID, g.Name, m.From, m.To)
	}
	if m.Phase == api.MigrationSwitched {
		return fmt.Errorf("%w: migration %d of guest %q switched over to %q: too late to abort", api.ErrConflict, m.ID, g.Name, m.To)
	}
	c := *m
	s.endMigration(idx, g, &c, api.MigrationAborted, p.Reason)
	return nil
}

// endMigration releases the other node and keeps m as the last migration.
func (s *State) endMigration(idx uint64, g *Guest, m *Migration, phase, reason string) {
	other := s.otherNode(g)
	m.Phase, m.Reason, m.EndIndex, m.Address = phase, reason, idx, ""
	g.LastMigration, g.Migration = m, nil
	g.ModifyIndex = idx
	s.setMigrating(g.Name, false)
	s.refreshNode(other)
}

// endedWithMigration is what an exit of g's current run does to its
// migration: an offline one places it on the target (it stopped to move
// there), a live one is aborted (the source's copy ended).
func (s *State) endedWithMigration(idx uint64, g *Guest) {
	m := g.Migration
	if m == nil || m.Phase == api.MigrationSwitched {
		return
	}
	c := *m
	if !m.Offline {
		s.endMigration(idx, g, &c, api.MigrationAborted, "the guest ended on node "+m.From)
		return
	}
	s.endMigration(idx, g, &c, api.MigrationDone, "")
	s.placeOn(idx, g, m.To, m.CPUs)
}

// migrationTo and migrationFrom are the ends of g's migration ("" when
// it has none).
func migrationTo(g *Guest) string {
	if g.Migration == nil {
		return ""
	}
	return g.Migration.To
}

func migrationFrom(g *Guest) string {
	if g.Migration == nil {
		return ""
	}
	return g.Migration.From
}

// migrationAllocation is what a migrating guest holds on its other node.
func migrationAllocation(g *Guest, balloon bool) scheduler.Allocation {
	a := allocation(g, balloon)
	// Named apart: the scheduler holds a guest on one node only, and a
	// pass that moves the guest must not drop this reservation.
	a.Guest, a.CPUs = g.Name+"@"+strconv.FormatUint(g.Migration.ID, 10), nil
	if g.Migration.CPUs != "" {
		a.CPUs, _ = scheduler.ParseCPUSet(g.Migration.CPUs)
	}
	return a
}

// drainMigration turns a drain's move of a running QEMU guest off a node
// that is up into a live migration to the node the scheduler chose.
func (s *State) drainMigration(p Placement, now time.Time, actor string) (events.Event, bool) {
	g := s.Guests[p.Guest]
	if g == nil || g.Driver != events.DriverQEMU || g.Status != StatusRunning || g.Migration != nil || g.Node == "" || g.Node == p.Node {
		return events.Event{}, false
	}
	n := s.Nodes[g.Node]
	if n == nil || n.Status != NodeStatusUp || n.Eligibility != events.Draining {
		return events.Event{}, false
	}
	e := subject(events.New(now, actor, &events.GuestMigrationRequested{From: g.Node, To: p.Node, Generation: g.Generation, CPUs: p.CPUs}), g.Name, p.Node)
	e.Reason = "node " + g.Node + " is draining"
	return e, true
}
