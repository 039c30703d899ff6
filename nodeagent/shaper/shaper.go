package shaper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// ErrNoNft is returned when the host has no nft (or tc) to shape with.
var ErrNoNft = errors.New("corral: this host cannot shape traffic: install nftables (nft) and iproute2 (tc)")

// Runner runs one program (nft or tc) with arguments and standard input,
// returning its combined output. The real one runs it on the host
// ([ExecRunner]); a test runs it inside a network namespace.
type Runner interface {
	Run(ctx context.Context, stdin string, name string, args ...string) (string, error)
}

// ExecRunner runs programs on the host, optionally through a prefix (for
// example nsenter --net=/run/netns/X).
type ExecRunner struct{ Prefix []string }

// Run implements [Runner].
func (r ExecRunner) Run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	argv := append(slices.Clone(r.Prefix), name)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Config configures a [Shaper].
type Config struct {
	// Table is the nftables table (family inet) the shaper owns; see
	// [TableName].
	Table string
	// Interfaces are the interfaces whose root qdisc the shaper owns.
	Interfaces []string
	// LineRate is the default class's rate in bits per second; 0 reads
	// each interface's speed from /sys/class/net, or takes 10 Gbit/s
	// where it has none (veth, bridges).
	LineRate uint64
}

// TableName is the nftables table an agent of node owns.
func TableName(node string) string { return "corral-" + node }

// DefaultLineRate is the line rate of an interface without a speed.
const DefaultLineRate = 10_000_000_000

// Shaper applies shaping plans to the host. Its methods may be called from
// any goroutine; they run one at a time.
type Shaper struct {
	cfg Config
	run Runner
	mu  sync.Mutex
}

// New returns a shaper; it touches nothing until Apply.
func New(cfg Config, run Runner) *Shaper {
	return &Shaper{cfg: cfg, run: run}
}

// Apply makes the host shape exactly guests: the table's rules are made
// again (its policers kept, see [Decide]), each interface's classes are
// made or changed, and the classes and policers of guests no longer
// shaped are deleted. With no guests it is [Shaper.Remove].
// Applying the same guests again rewrites the same values, which also
// repairs a table or class changed by hand.
func (s *Shaper) Apply(ctx context.Context, guests []Guest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ifaces, err := s.observe(ctx)
	if err != nil {
		return err
	}
	p, err := Decide(s.cfg.Table, ifaces, s.limits(ctx), guests)
	if err != nil {
		return err
	}
	return s.do(ctx, p)
}

// Remove takes away the table and the shaper's root qdiscs.
func (s *Shaper) Remove(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ifaces, err := s.observe(ctx)
	if err != nil {
		return err
	}
	return s.do(ctx, RemovePlan(s.cfg.Table, ifaces))
}

func (s *Shaper) do(ctx context.Context, p Plan) error {
	if _, err := s.run.Run(ctx, p.Nft, "nft", "-f", "-"); err != nil {
		return err
	}
	for _, c := range p.TC {
		if _, err := s.run.Run(ctx, "", "tc", c...); err != nil {
			return err
		}
	}
	return nil
}

var (
	limitObj = regexp.MustCompile(`(?m)^\s*limit (\S+) \{`)
	htbRoot  = regexp.MustCompile(`(?m)^qdisc htb 1: root `)
	htbClass = regexp.MustCompile(`(?m)^class htb 1:([0-9a-f]+) `)
)

// limits returns the names of the limit objects in the shaper's table;
// none where it has no table yet.
func (s *Shaper) limits(ctx context.Context) []string {
	out, err := s.run.Run(ctx, "", "nft", "list", "table", "inet", s.cfg.Table)
	if err != nil {
		return nil
	}
	var names []string
	for _, m := range limitObj.FindAllStringSubmatch(out, -1) {
		names = append(names, m[1])
	}
	return names
}

// observe reads each shaped interface's root qdisc and classes.
func (s *Shaper) observe(ctx context.Context) ([]Interface, error) {
	out := make([]Interface, 0, len(s.cfg.Interfaces))
	for _, name := range s.cfg.Interfaces {
		ifc := Interface{Name: name, LineRate: s.lineRate(name)}
		q, err := s.run.Run(ctx, "", "tc", "qdisc", "show", "dev", name, "root")
		if err != nil {
			return nil, fmt.Errorf("corral: reading the root qdisc of %s (is it an interface of this host? check --shape-interface): %w", name, err)
		}
		if htbRoot.MatchString(q) {
			ifc.Shaped = true
			c, err := s.run.Run(ctx, "", "tc", "class", "show", "dev", name)
			if err != nil {
				return nil, err
			}
			for _, m := range htbClass.FindAllStringSubmatch(c, -1) {
				if n, err := strconv.ParseUint(m[1], 16, 16); err == nil {
					ifc.Classes = append(ifc.Classes, uint16(n))
				}
			}
		}
		out = append(out, ifc)
	}
	return out, nil
}

func (s *Shaper) lineRate(iface string) uint64 {
	if s.cfg.LineRate > 0 {
		return s.cfg.LineRate
	}
	b, err := os.ReadFile("/sys/class/net/" + iface + "/speed")
	if n, perr := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && perr == nil && n > 0 {
		return uint64(n) * 1_000_000
	}
	return DefaultLineRate
}

// Probe checks that the host has nft and tc, and reports whether the
// kernel has tc's cgroup classifier (cls_cgroup): it never needs it, and
// says which path it takes.
func Probe(ctx context.Context, run Runner) (Capabilities, error) {
	var c Capabilities
	if _, err := run.Run(ctx, "", "nft", "--version"); err != nil {
		return c, fmt.Errorf("%w (nft: %v)", ErrNoNft, err)
	}
	if _, err := run.Run(ctx, "", "tc", "-V"); err != nil {
		return c, fmt.Errorf("%w (tc: %v)", ErrNoNft, err)
	}
	c.ClsCgroup = kernelHas("CONFIG_NET_CLS_CGROUP", "cls_cgroup")
	return c, nil
}

// Capabilities are what [Probe] found.
type Capabilities struct {
	// ClsCgroup is set when the kernel has tc's cgroup classifier. The
	// shaper classifies with nftables (meta priority) either way.
	ClsCgroup bool
}

// Classifier says how the shaper classifies, for the agent's log.
func (c Capabilities) Classifier() string {
	if c.ClsCgroup {
		return "nftables meta priority (the kernel also has cls_cgroup, which corral does not need)"
	}
	return "nftables meta priority (the kernel has no cls_cgroup tc classifier)"
}

// kernelHas reports whether the running kernel has a feature built in or
// as a loaded or installable module.
func kernelHas(config, module string) bool {
	if b, err := os.ReadFile("/proc/modules"); err == nil && bytes.Contains(b, []byte(module+" ")) {
		return true
	}
	if b, err := readConfig(); err == nil {
		return bytes.Contains(b, []byte("\n"+config+"=y")) || bytes.Contains(b, []byte("\n"+config+"=m"))
	}
	return false
}
