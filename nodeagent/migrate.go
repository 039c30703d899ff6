package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/coordinator/api"
	"github.com/corral-dev/corral/events"
	"github.com/corral-dev/corral/nodeagent/driver"
)

// This file is the agent's part in a live migration (events/migration.go
// has the sequence). Each pass looks at the migrations its desired state
// names and takes the next step of its end:
//
//   - target: start QEMU with -incoming and report where it listens;
//     once QEMU holds the whole guest (paused), report the switch; once
//     the log has the switch, resume it. An incoming instance the agent
//     finds from before a restart is destroyed and the migration aborted:
//     its stream is gone.
//   - source: once the target is ready, send (QMP migrate, disks by
//     incremental block migration), reporting progress at most once a
//     second; once the log has the switch, Reconcile destroys this copy
//     and the agent reports it gone. A failure, or a target that does not
//     switch within MigrationSwitchTimeout, is reported as an abort; a
//     source paused by a completed transfer resumes only once the log has
//     the abort, so the two copies never run together.
//
// The switch in the log is the one commit point: the target runs the
// guest only after it, the source only without it.

// Migration roles and phases, as the desired state names them.
const (
	MigrationSource   = api.MigrationSource
	MigrationTarget   = api.MigrationTarget
	MigrationSwitched = api.MigrationSwitched
)

// migrationRun is what the agent knows of one migration it takes part in.
type migrationRun struct {
	id   uint64
	role string
	// here is set once this process started its end (a run found without
	// it is from before a restart).
	here bool

	// target
	address        string
	readyReported  bool
	switchReported bool
	resumed        bool

	// source
	sending          bool
	migratedReported bool

	abortReported bool
	cancel        context.CancelFunc

	// sendDone is closed when the source's send goroutine returned.
	sendDone chan struct{}

	mu         sync.Mutex // guards the fields the watcher goroutines set
	received   bool       // target: QEMU holds the whole guest
	receivedAt time.Time  // target: when the watcher saw it
	completed  time.Time  // source: the transfer completed
	failed     string     // source: why the transfer failed
	// final is the source's last progress (completed, with QEMU's
	// downtime); finalReported once the log took it.
	final         *events.GuestMigrationProgress
	finalReported bool
}

func (r *migrationRun) set(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

func migrationOf(d *DesiredGuest) *api.DesiredMigration {
	if d == nil {
		return nil
	}
	return d.Migration
}

// qmpOf returns a QEMU instance's monitor, nil for other instances.
func qmpOf(g *guest) *driver.QMP {
	if g == nil || g.inst == nil {
		return nil
	}
	q, ok := g.inst.(interface{ QMP() *driver.QMP })
	if !ok {
		return nil
	}
	return q.QMP()
}

// captureFinals runs before Reconcile's actions, which destroy a source's
// copy once the log has the switch: the switch may come before the
// transfer's follower saw QEMU complete (it looks every 100 ms), so QEMU
// is asked now, while it is there, for the figures the last report
// carries (the downtime).
func (a *Agent) captureFinals(ctx context.Context, d Desired) {
	for i := range d.Guests {
		dg := &d.Guests[i]
		m, run := dg.Migration, a.migrations[dg.Name]
		if m == nil || run == nil || m.Role != MigrationSource || m.Phase != MigrationSwitched || run.id != m.ID || !run.sending {
			continue
		}
		var final *events.GuestMigrationProgress
		run.set(func() { final = run.final })
		g := a.guests[dg.Name]
		if final != nil || g == nil || g.gen != m.SourceGeneration {
			continue
		}
		if q := qmpOf(g); q != nil {
			if info, err := q.QueryMigrate(ctx); err == nil && info.Status == events.MigrationCompleted {
				p := a.migrationProgress(m.SourceGeneration, m.ID, info)
				run.set(func() {
					if run.final == nil {
						run.final = p
					}
				})
			}
		}
	}
}

// migrate takes each migration's next step; it runs on the Run goroutine
// after Reconcile's actions.
func (a *Agent) migrate(ctx context.Context, d Desired) {
	if a.migrations == nil {
		a.migrations = map[string]*migrationRun{}
	}
	seen := map[string]bool{}
	for i := range d.Guests {
		dg := &d.Guests[i]
		m := dg.Migration
		if m == nil {
			continue
		}
		seen[dg.Name] = true
		run := a.migrations[dg.Name]
		if run != nil && (run.id != m.ID || run.role != m.Role) {
			a.endMigration(ctx, d, dg.Name, run)
			run = nil
		}
		if run == nil {
			run = &migrationRun{id: m.ID, role: m.Role}
			a.migrations[dg.Name] = run
		}
		if d.NodeDown {
			continue // its guests may be placed elsewhere: no step now
		}
		switch m.Role {
		case MigrationTarget:
			a.migrateTarget(ctx, dg, run)
		case MigrationSource:
			a.migrateSource(ctx, dg, run)
		}
	}
	for name, run := range a.migrations {
		if !seen[name] {
			a.endMigration(ctx, d, name, run)
		}
	}
}

// endMigration forgets a migration the log no longer names here. A
// source copy it paused (a transfer that completed, then was aborted)
// runs on.
func (a *Agent) endMigration(ctx context.Context, d Desired, name string, run *migrationRun) {
	delete(a.migrations, name)
	if run.cancel != nil {
		run.cancel()
	}
	g := a.guests[name]
	q := qmpOf(g)
	if run.role != MigrationSource || q == nil || g.phase != PhaseRunning || g.frozen {
		return
	}
	if want := desiredOf(d, name); want == nil || want.Generation != g.gen || want.Paused {
		return
	}
	if run.sending {
		_ = q.MigrateCancel(ctx) // an operator's abort mid-transfer
	}
	st, err := q.Status(ctx)
	if err == nil && (st == "postmigrate" || st == "paused" || st == "finish-migrate") {
		err = q.Cont(ctx)
		a.log.Info("migration ended without a switch: the guest runs on here", "guest", name, "migration", run.id, "status", st)
	}
	if err != nil {
		a.log.Warn("resuming the guest after its migration ended", "guest", name, "err", err)
	}
}

func (a *Agent) abortMigration(ctx context.Context, name string, run *migrationRun, reason string) {
	if run.abortReported {
		return
	}
	a.log.Warn("aborting a migration", "guest", name, "migration", run.id, "role", run.role, "reason", reason)
	_, err := a.report(ctx, []Report{{Guest: name, Payload: &events.GuestMigrationAborted{Node: a.cfg.NodeID, Migration: run.id, Reason: truncateReason(reason)}}})
	if err == nil || errors.Is(err, ErrRefused) {
		run.abortReported = true
	}
}

func truncateReason(s string) string {
	if len(s) > events.MaxTuningError {
		return s[:events.MaxTuningError]
	}
	return s
}

func (a *Agent) migrateTarget(ctx context.Context, dg *DesiredGuest, run *migrationRun) {
	m := dg.Migration
	g := a.guests[dg.Name]
	held := g != nil && g.gen == dg.Generation
	if m.Phase == MigrationSwitched {
		if !held || g.phase != PhaseRunning || run.resumed || g.frozen {
			return
		}
		q := qmpOf(g)
		if q == nil {
			return
		}
		st, err := q.Status(ctx)
		if err == nil && st != "running" && !dg.Paused {
			err = q.Cont(ctx)
		}
		if err != nil {
			a.log.Warn("resuming the migrated guest; retried on the next pass", "guest", dg.Name, "err", err)
			return
		}
		run.resumed = true
		g.startReported = true
		a.persist(g)
		var at time.Time
		run.set(func() { at = run.receivedAt })
		// From the whole guest received to running here: the switch's
		// commit, which QEMU's downtime does not count.
		var pausedMs int64
		if !at.IsZero() {
			pausedMs = time.Since(at).Milliseconds()
		}
		a.log.Info("migrated guest runs here", "guest", dg.Name, "generation", g.gen, "paused_here_ms", pausedMs)
		return
	}
	if held && !run.here {
		// From before a restart: the stream it waited for is gone.
		a.destroy(ctx, g)
		a.abortMigration(ctx, dg.Name, run, "the target agent restarted before the switch")
		return
	}
	if run.abortReported {
		return
	}
	if !held {
		a.startIncoming(ctx, dg, run)
		return
	}
	if g.phase != PhaseRunning {
		st, _ := g.inst.Status()
		a.destroy(ctx, g)
		a.abortMigration(ctx, dg.Name, run, "the target QEMU ended before the switch: "+st.String())
		return
	}
	if !run.readyReported {
		_, err := a.report(ctx, []Report{{Guest: dg.Name, Payload: &events.GuestMigrationTargetReady{Node: a.cfg.NodeID, Generation: g.gen, Address: run.address}}})
		if err != nil && !errors.Is(err, ErrRefused) {
			return // retried on the next pass
		}
		run.readyReported = true
	}
	var received bool
	run.set(func() { received = run.received })
	if received && !run.switchReported && m.Phase == api.MigrationTargetReady {
		_, err := a.report(ctx, []Report{{Guest: dg.Name, Payload: &events.GuestMigrationSwitched{Node: a.cfg.NodeID, Generation: g.gen, PID: g.inst.PID()}}})
		if err != nil && !errors.Is(err, ErrRefused) {
			return
		}
		run.switchReported = true
		a.log.Info("incoming migration received; switch reported", "guest", dg.Name, "migration", run.id)
	}
}

// startIncoming starts the target QEMU, paused and listening.
func (a *Agent) startIncoming(ctx context.Context, dg *DesiredGuest, run *migrationRun) {
	host := a.cfg.MigrationHost
	if host == "" {
		host = "127.0.0.1"
	}
	port, err := driver.FreePort(host)
	if err != nil {
		a.abortMigration(ctx, dg.Name, run, err.Error())
		return
	}
	run.address = net.JoinHostPort(host, strconv.Itoa(port))
	g := &guest{name: dg.Name, kind: cgroupdriver.Kind(dg.Definition.Driver), partition: dg.Definition.Partition, gen: dg.Generation, phase: PhaseRunning,
		applied: dg.Resources.Knobs(), policy: dg.Definition.Restart}
	a.guests[g.name] = g
	if err := os.MkdirAll(a.guestDir(dg.Name), 0o700); err != nil {
		delete(a.guests, g.name)
		a.abortMigration(ctx, dg.Name, run, "the target cannot make the guest's state directory: "+err.Error())
		return
	}
	spec := driver.SpecFor(dg.Name, &dg.Definition, a.guestDir(dg.Name))
	spec.Resources = dg.Resources
	spec.Incoming = "tcp:" + run.address
	// The same devices as the source's, or QEMU refuses the stream: a
	// guest on the bridge gets its interface here too.
	nw, err := a.networkFor(ctx, dg.Name, &dg.Definition)
	if err != nil {
		delete(a.guests, g.name)
		a.abortMigration(ctx, dg.Name, run, "the target has no network for the guest: "+err.Error())
		return
	}
	spec.Network, g.net = nw, nw
	a.persist(g)
	inst, err := a.deps.Drivers.Start(ctx, spec)
	if err != nil {
		delete(a.guests, g.name)
		a.abortMigration(ctx, dg.Name, run, "the target could not start QEMU: "+err.Error())
		return
	}
	g.inst, run.here = inst, true
	a.watchDone(ctx, inst)
	a.log.Info("incoming migration: QEMU waits", "guest", dg.Name, "migration", run.id, "address", run.address)
	q := qmpOf(g)
	wctx, cancel := context.WithCancel(ctx)
	run.cancel = cancel
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-inst.Done():
				return
			case <-t.C:
			}
			if st, err := q.Status(wctx); err == nil && st != "inmigrate" {
				run.set(func() { run.received, run.receivedAt = true, time.Now() })
				a.poke()
				return
			}
		}
	}()
	a.migrateTarget(ctx, dg, run) // report ready now
}

func (a *Agent) migrateSource(ctx context.Context, dg *DesiredGuest, run *migrationRun) {
	m := dg.Migration
	g := a.guests[dg.Name]
	held := g != nil && g.gen == m.SourceGeneration
	if m.Phase == MigrationSwitched {
		if held || run.migratedReported {
			return // Reconcile destroys the copy first
		}
		items := []Report{{Guest: dg.Name, Payload: &events.GuestMigrated{Node: a.cfg.NodeID, Generation: m.SourceGeneration, Migration: m.ID}}}
		if run.sending {
			// The transfer's last report goes first: it carries the
			// downtime, and the log takes none after guest.migrated.
			run.cancel()
			<-run.sendDone
			var final *events.GuestMigrationProgress
			run.set(func() {
				if !run.finalReported {
					final = run.final
				}
			})
			if final != nil {
				items = append([]Report{{Guest: dg.Name, Payload: final}}, items...)
			}
		}
		_, err := a.report(ctx, items)
		if err == nil || errors.Is(err, ErrRefused) {
			run.migratedReported = true
			a.log.Info("migrated away; this node's copy is gone", "guest", dg.Name, "migration", m.ID)
		}
		return
	}
	q := qmpOf(g)
	if !held || g.phase != PhaseRunning || q == nil || run.abortReported {
		return // an exit of the copy aborts the migration by itself
	}
	if !run.here && !run.sending {
		run.here = true
		// After a restart QEMU may be sending, or done: this agent no
		// longer follows that transfer, so it ends it.
		if info, err := q.QueryMigrate(ctx); err == nil && info.Status != "" && info.Status != "none" && info.Status != "cancelled" && info.Status != "failed" {
			_ = q.MigrateCancel(ctx)
			a.abortMigration(ctx, dg.Name, run, "the source agent restarted mid-migration")
			return
		}
	}
	var completed time.Time
	var failed string
	run.set(func() { completed, failed = run.completed, run.failed })
	switch {
	case failed != "":
		a.abortMigration(ctx, dg.Name, run, failed)
		return
	case !completed.IsZero():
		timeout := a.cfg.MigrationSwitchTimeout
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		if time.Since(completed) > timeout { // checked on each pass: a resync comes every few seconds
			a.abortMigration(ctx, dg.Name, run, fmt.Sprintf("the target did not switch over within %s of the transfer's end", timeout))
		}
		return
	}
	if m.Phase != api.MigrationTargetReady || run.sending {
		return
	}
	run.sending, run.sendDone = true, make(chan struct{})
	disks := len(dg.Definition.Disks) > 0
	sctx, cancel := context.WithCancel(ctx)
	run.cancel = cancel
	name, gen := dg.Name, m.SourceGeneration
	go a.send(sctx, name, gen, q, m.ID, m.Address, disks, run)
}

// migrationProgress is the report of a transfer's state as QEMU gives it.
func (a *Agent) migrationProgress(gen, id uint64, info driver.MigrationInfo) *events.GuestMigrationProgress {
	p := &events.GuestMigrationProgress{Node: a.cfg.NodeID, Generation: gen, Migration: id, Status: info.Status,
		TransferredBytes: info.RAM.Transferred, RemainingBytes: info.RAM.Remaining, TotalBytes: info.RAM.Total,
		ElapsedMs: info.TotalTime, DowntimeMs: info.Downtime}
	if info.Disk != nil {
		p.DiskRemaining = info.Disk.Remaining
	}
	return p
}

// send runs the transfer and follows it; it runs on a goroutine of its
// own and reports progress itself.
func (a *Agent) send(ctx context.Context, name string, gen uint64, q *driver.QMP, id uint64, address string, disks bool, run *migrationRun) {
	defer close(run.sendDone)
	fail := func(why string) {
		run.set(func() { run.failed = why })
		a.poke()
	}
	if err := q.Migrate(ctx, address, disks, a.cfg.MigrationMaxBandwidth); err != nil {
		fail("the source could not start the migration: " + err.Error())
		return
	}
	a.log.Info("migration sending", "guest", name, "migration", id, "to", address, "disks", disks)
	progress := func(info driver.MigrationInfo) bool {
		p := a.migrationProgress(gen, id, info)
		if info.Status == events.MigrationCompleted {
			run.set(func() { run.final = p })
		}
		_, err := a.report(ctx, []Report{{Guest: name, Payload: p}})
		if err != nil && !errors.Is(err, ErrRefused) {
			a.log.Debug("reporting migration progress", "guest", name, "err", err)
		}
		return err == nil
	}
	var last time.Time
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		info, err := q.QueryMigrate(ctx)
		if err != nil {
			continue
		}
		switch info.Status {
		case events.MigrationCompleted:
			reported := progress(info)
			a.log.Info("migration transfer completed", "guest", name, "migration", id, "downtime_ms", info.Downtime, "total_ms", info.TotalTime)
			run.set(func() { run.completed, run.finalReported = time.Now(), reported })
			a.poke()
			return
		case "failed", "cancelled":
			fail("QEMU's migration " + info.Status + ": " + info.ErrorDesc)
			return
		}
		if time.Since(last) >= time.Second {
			progress(info)
			last = time.Now()
		}
	}
}
