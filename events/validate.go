package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("corral: invalid value")

// FieldError says which field was wrong, what it held and what it must be.
type FieldError struct {
	Field string
	Value string
	Want  string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s %q is invalid: %s", e.Field, e.Value, e.Want)
}

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, value, want string) error {
	return &FieldError{Field: field, Value: value, Want: want}
}

// MaxIDLen is the longest guest or node ID.
const MaxIDLen = 63

const idRule = "use 1 to 63 characters from a-z, 0-9 and '-', starting with a letter or digit"

// ValidateID checks a guest or node ID: [a-z0-9][a-z0-9-]{0,62}. IDs become
// path components and NATS subject tokens, so nothing else is allowed.
func ValidateID(field, id string) error {
	if id == "" {
		return fieldErr(field, id, "it is empty; "+idRule)
	}
	if len(id) > MaxIDLen {
		return fieldErr(field, truncate(id), fmt.Sprintf("it is %d characters long; %s", len(id), idRule))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		default:
			return fieldErr(field, id, fmt.Sprintf("character %q at position %d is not allowed; %s", c, i+1, idRule))
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1000,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1000 * 1000,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1000 * 1000 * 1000,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1000 * 1000 * 1000 * 1000,
}

// ParseSize parses a byte size such as "512MiB", "1G", "64m" or "1048576".
// K, M, G and T (with or without "iB") are powers of 1024; KB, MB, GB and TB
// are powers of 1000. The result is positive.
func ParseSize(field, s string) (int64, error) {
	const want = "give a positive whole number with an optional unit: 512MiB, 1G, 64M, 2048K or plain bytes"
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fieldErr(field, s, want)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fieldErr(field, s, want)
	}
	mult, ok := sizeUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if !ok {
		return 0, fieldErr(field, s, want)
	}
	if n <= 0 {
		return 0, fieldErr(field, s, "it must be greater than zero; "+want)
	}
	if n > math.MaxInt64/mult {
		return 0, fieldErr(field, s, "it is too large")
	}
	return n * mult, nil
}

// FormatSize prints bytes in the largest binary unit that divides it.
func FormatSize(b int64) string {
	for _, u := range []struct {
		n    int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if b >= u.n && b%u.n == 0 {
			return strconv.FormatInt(b/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(b, 10) + "B"
}

// Limits on guest resources.
const (
	MinMemoryBytes   = 4 << 20
	MaxMemoryBytes   = 4 << 40
	MaxVCPUs         = 1024
	MinCPUShares     = 2
	MaxCPUShares     = 262144
	DefaultCPUShares = 1024
	maxLabels        = 64
	maxLabelLen      = 63
	maxPathLen       = 4096
	maxCommandArgs   = 256
	maxArgLen        = 4096
)

// ValidateLabels checks label keys and values.
func ValidateLabels(field string, labels map[string]string) error {
	if len(labels) > maxLabels {
		return fieldErr(field, fmt.Sprint(len(labels)), fmt.Sprintf("at most %d labels", maxLabels))
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := validateLabelPart(field+" key", k, false); err != nil {
			return err
		}
		if err := validateLabelPart(field+" "+k, labels[k], true); err != nil {
			return err
		}
	}
	return nil
}

func validateLabelPart(field, s string, emptyOK bool) error {
	const rule = "use up to 63 characters from a-z, A-Z, 0-9, '.', '_' and '-'"
	if s == "" && !emptyOK {
		return fieldErr(field, s, "it is empty; "+rule)
	}
	if len(s) > maxLabelLen {
		return fieldErr(field, truncate(s), rule)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fieldErr(field, s, fmt.Sprintf("character %q is not allowed; %s", c, rule))
		}
	}
	return nil
}

func validatePath(field, p string, required bool) error {
	if p == "" {
		if required {
			return fieldErr(field, p, "it is required for this driver; give an absolute path")
		}
		return nil
	}
	if !strings.HasPrefix(p, "/") || len(p) > maxPathLen || strings.ContainsAny(p, "\x00\n\r") {
		return fieldErr(field, truncate(p), "give an absolute path without control characters")
	}
	return nil
}

// Validate checks every field of a guest definition.
func (g *GuestDefined) Validate() error {
	if err := ValidateID("guest name", g.Name); err != nil {
		return err
	}
	switch g.Driver {
	case DriverProcess, DriverLXC, DriverQEMU:
	default:
		return fieldErr("driver", g.Driver, "use process, lxc or qemu")
	}
	if g.MemoryBytes < MinMemoryBytes || g.MemoryBytes > MaxMemoryBytes {
		return fieldErr("memory", FormatSize(g.MemoryBytes), fmt.Sprintf("use %s to %s", FormatSize(MinMemoryBytes), FormatSize(MaxMemoryBytes)))
	}
	if g.VCPUs < 1 || g.VCPUs > MaxVCPUs {
		return fieldErr("vcpus", strconv.Itoa(g.VCPUs), fmt.Sprintf("use 1 to %d", MaxVCPUs))
	}
	if err := ValidateCPUShares(g.CPUShares); err != nil {
		return err
	}
	if len(g.Command) > maxCommandArgs {
		return fieldErr("command", fmt.Sprint(len(g.Command)), fmt.Sprintf("at most %d arguments", maxCommandArgs))
	}
	for _, a := range g.Command {
		if len(a) > maxArgLen || strings.ContainsRune(a, 0) {
			return fieldErr("command", truncate(a), fmt.Sprintf("arguments are at most %d bytes and contain no NUL", maxArgLen))
		}
	}
	switch g.Driver {
	case DriverProcess:
		if len(g.Command) == 0 || g.Command[0] == "" {
			return fieldErr("command", "", "the process driver needs a command to run")
		}
	case DriverLXC:
		if err := validatePath("rootfs", g.Rootfs, true); err != nil {
			return err
		}
	case DriverQEMU:
		// A disk may boot the guest instead of a kernel.
		if err := validatePath("kernel", g.Kernel, len(g.Disks) == 0 && g.Rootfs == ""); err != nil {
			return err
		}
	}
	if err := validatePath("rootfs", g.Rootfs, false); err != nil {
		return err
	}
	if err := validatePath("kernel", g.Kernel, false); err != nil {
		return err
	}
	if err := validatePath("initrd", g.Initrd, false); err != nil {
		return err
	}
	if err := ValidateLabels("label", g.Labels); err != nil {
		return err
	}
	if err := validateDevices(g.Devices); err != nil {
		return err
	}
	if err := validateDisks(g.Driver, g.Disks); err != nil {
		return err
	}
	if g.Partition != "" {
		if err := ValidateID("partition", g.Partition); err != nil {
			return err
		}
	}
	if err := g.validateIsolation(); err != nil {
		return err
	}
	if g.Restart != nil {
		if err := g.Restart.Validate(); err != nil {
			return err
		}
	}
	switch {
	case g.Network != "" && g.Network != NetworkBridge:
		return fieldErr("network", g.Network, "use bridge (an interface on the node's bridge) or none")
	case g.Network == NetworkBridge && g.Driver == DriverProcess:
		return fieldErr("network", g.Network, "a process guest uses the host's network; only lxc and qemu guests get an interface on the bridge")
	}
	return g.validatePlacementRules()
}

// ValidateCPUShares checks a cpu_shares value.
func ValidateCPUShares(n int) error {
	if n < MinCPUShares || n > MaxCPUShares {
		return fieldErr("cpu_shares", strconv.Itoa(n), fmt.Sprintf("use %d to %d (default %d)", MinCPUShares, MaxCPUShares, DefaultCPUShares))
	}
	return nil
}

// ValidateNode checks a node registration.
func (n *NodeRegistered) Validate() error {
	if err := ValidateID("node id", n.ID); err != nil {
		return err
	}
	if n.CPUs < 1 || n.CPUs > 1<<16 {
		return fieldErr("cpus", strconv.Itoa(n.CPUs), "use 1 to 65536")
	}
	if n.MemoryBytes < MinMemoryBytes {
		return fieldErr("memory", strconv.FormatInt(n.MemoryBytes, 10), "a node needs at least 4MiB")
	}
	if n.ReserveCPUs < 0 || n.ReserveCPUs >= n.CPUs && n.ReserveCPUs != 0 {
		return fieldErr("reserve_cpus", strconv.Itoa(n.ReserveCPUs), "use 0 up to one less than the node's CPUs")
	}
	if n.ReserveMemoryBytes < 0 || n.ReserveMemoryBytes >= n.MemoryBytes {
		return fieldErr("reserve_memory", strconv.FormatInt(n.ReserveMemoryBytes, 10), "use 0 up to less than the node's memory")
	}
	return ValidateLabels("label", n.Labels)
}

// Bounds on what one node may claim when it registers. MaxNodeCPUs matches
// the scheduler's CPU IDs (0-8191) and MaxNodeMemoryBytes its sizes.
const (
	MaxNodeCPUs        = 8192
	MaxNodeMemoryBytes = 1 << 52
	maxNodeDrivers     = 16
	maxControllers     = 32
	maxShapeInterfaces = 16
	maxShortField      = 64
)

// ValidateRegistration checks a registration as a node's agent sends it,
// more strictly than Validate (which the state machine also applies to
// registrations an older build committed): every value one host supplies
// is bounded, so one bad host cannot stop placement on the others.
func (n *NodeRegistered) ValidateRegistration() error {
	if n.CPUs > MaxNodeCPUs {
		return fieldErr("cpus", strconv.Itoa(n.CPUs), fmt.Sprintf("use 1 to %d", MaxNodeCPUs))
	}
	if err := n.Validate(); err != nil {
		return err
	}
	if n.MemoryBytes > MaxNodeMemoryBytes {
		return fieldErr("memory", strconv.FormatInt(n.MemoryBytes, 10), fmt.Sprintf("at most %d bytes (4 PiB)", int64(MaxNodeMemoryBytes)))
	}
	if len(n.Drivers) > maxNodeDrivers {
		return fieldErr("drivers", strconv.Itoa(len(n.Drivers)), fmt.Sprintf("at most %d drivers", maxNodeDrivers))
	}
	for _, name := range sortedKeys(n.Drivers) {
		if err := ValidateID("driver", name); err != nil {
			return err
		}
		if err := shortText("driver "+name+" version", n.Drivers[name]); err != nil {
			return err
		}
	}
	for field, list := range map[string]string{"cpuset": n.CPUSet, "numa_nodes": n.NUMANodes} {
		if _, err := ParseIDList(field, list); list != "" && err != nil {
			return err
		}
	}
	if len(n.Controllers) > maxControllers {
		return fieldErr("controllers", strconv.Itoa(len(n.Controllers)), fmt.Sprintf("at most %d controllers", maxControllers))
	}
	for _, c := range n.Controllers {
		if err := shortText("controller", c); err != nil {
			return err
		}
	}
	if len(n.ShapeInterfaces) > maxShapeInterfaces {
		return fieldErr("shape_interfaces", strconv.Itoa(len(n.ShapeInterfaces)), fmt.Sprintf("at most %d interfaces", maxShapeInterfaces))
	}
	for _, i := range n.ShapeInterfaces {
		if i == "" || len(i) > 15 || strings.ContainsAny(i, "/ \x00") {
			return fieldErr("shape_interfaces", i, "an interface name of 1 to 15 characters")
		}
	}
	if len(n.Shaping) > 1024 {
		return fieldErr("shaping", n.Shaping[:64], "at most 1024 characters")
	}
	if err := shortText("address", n.Address); err != nil {
		return err
	}
	return shortText("cgroup_mode", n.CgroupMode)
}

func shortText(field, s string) error {
	if len(s) > maxShortField {
		return fieldErr(field, s[:maxShortField]+"…", fmt.Sprintf("at most %d characters", maxShortField))
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return fieldErr(field, strconv.Quote(s), "no control characters")
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// strictDecode decodes exactly one JSON value, refusing unknown fields and
// trailing data.
func strictDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// DecodeStrict is the decoder used for API request bodies: one JSON value,
// no unknown fields, nothing after it.
func DecodeStrict(b []byte, v any) error { return strictDecode(b, v) }

// Validate checks an eligibility change.
func (n *NodeEligibility) Validate() error {
	switch n.Eligibility {
	case Eligible, Ineligible, Draining:
	default:
		return fieldErr("eligibility", n.Eligibility, "use eligible, ineligible or draining")
	}
	if n.MaxParallel < 0 {
		return fieldErr("max_parallel", strconv.Itoa(n.MaxParallel), "use 0 (all at once) or more")
	}
	if n.Eligibility != Draining && (n.MaxParallel != 0 || !n.Deadline.IsZero()) {
		return fieldErr("eligibility", n.Eligibility, "a deadline and max_parallel belong to a drain")
	}
	return nil
}

// MaxOvercommit bounds the overcommit ratios.
const MaxOvercommit = 1000

// Validate checks a scheduler configuration.
func (c *SchedulerConfig) Validate() error {
	if c.Algorithm != "binpack" && c.Algorithm != "spread" {
		return fieldErr("algorithm", c.Algorithm, "use binpack or spread")
	}
	for field, r := range map[string]float64{"cpu_overcommit": c.CPUOvercommit, "memory_overcommit": c.MemoryOvercommit} {
		if !(r >= 1 && r <= MaxOvercommit) {
			return fieldErr(field, strconv.FormatFloat(r, 'g', -1, 64), fmt.Sprintf("use a ratio from 1 (no overcommit) to %d", MaxOvercommit))
		}
	}
	return nil
}

func (g *GuestDefined) validatePlacementRules() error {
	if g.SpreadBy != "" {
		if err := validateLabelPart("spread_by", g.SpreadBy, false); err != nil {
			return err
		}
		if _, ok := g.Labels[g.SpreadBy]; !ok {
			return fieldErr("spread_by", g.SpreadBy, "the guest needs a label with this key, e.g. --label "+g.SpreadBy+"=VALUE")
		}
	}
	if g.PinCPUs < 0 || g.PinCPUs > g.VCPUs {
		return fieldErr("pin_cpus", strconv.Itoa(g.PinCPUs), fmt.Sprintf("use 0 to the guest's vcpus (%d)", g.VCPUs))
	}
	if g.PinCPUs > 0 && g.CPUSet != "" {
		return fieldErr("cpuset", g.CPUSet, "give either an explicit cpuset or a number of CPUs to pin, not both")
	}
	if len(g.Constraints) > maxLabels {
		return fieldErr("constraint", fmt.Sprint(len(g.Constraints)), fmt.Sprintf("at most %d constraints", maxLabels))
	}
	return nil
}
