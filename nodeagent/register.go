package nodeagent

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/cgroupdriver"
	"github.com/corral-dev/corral/events"
)

// secretFile holds the node secret in the state directory.
const secretFile = "secret"

// loadSecret returns the node secret, creating it (32 random bytes, hex,
// mode 0600) on the first start.
func loadSecret(stateDir string) (string, error) {
	path := filepath.Join(stateDir, secretFile)
	b, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(b)); len(s) >= 32 {
			return s, nil
		}
		return "", fmt.Errorf("corral: node secret %s is too short; remove it to make a new one (the node must then register again)", path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("corral: node secret: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	s := hex.EncodeToString(raw[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("corral: node secret: %w", err)
	}
	_, err = f.WriteString(s + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("corral: node secret: %w", err)
	}
	return s, nil
}

// Registration is what the agent registers its node with.
func (a *Agent) Registration() events.NodeRegistered {
	rep := a.deps.Cgroups.Report()
	var ctrls []string
	for _, h := range rep.Hierarchies {
		for _, c := range h.Controllers {
			if !strings.HasPrefix(c, "name=") && !slices.Contains(ctrls, c) {
				ctrls = append(ctrls, c)
			}
		}
	}
	slices.Sort(ctrls)
	cpus, mem := a.capacity() // the same figures the reserve is cut from
	reg := events.NodeRegistered{
		ID: a.cfg.NodeID, CPUs: cpus, MemoryBytes: mem,
		ReserveCPUs: a.cfg.ReserveCPUs, ReserveMemoryBytes: a.cfg.ReserveMemoryBytes,
		Drivers: a.deps.Drivers.Versions(), Labels: a.cfg.Labels,
		CgroupMode: string(rep.Mode), Controllers: ctrls,
		FenceTimeoutMs: a.cfg.FenceTimeout.Milliseconds(), HeartbeatMs: a.cfg.HeartbeatInterval.Milliseconds(),
		ShapeInterfaces: a.cfg.ShapeInterfaces, Shaping: a.cfg.Shaping,
	}
	if n := a.cfg.Network; n.Bridge != "" {
		reg.Bridge, reg.BridgeCIDR = n.Bridge, n.CIDR.String()
	}
	// What numatune, emulatorpin and vcpupin are checked against.
	if h, ok := a.deps.Cgroups.(interface{ Host() cgroupdriver.HostInfo }); ok {
		info := h.Host()
		reg.CPUSet, reg.NUMANodes = info.CPUs, info.Mems
	}
	if _, ok := rep.Controller("cpu"); ok {
		reg.VCPUGroups = true // v1 child groups or v2 threaded ones; see cgroupdriver.ErrThreadsUnsupported
	}
	return reg
}

// register registers the node, retrying every heartbeat interval until it
// succeeds or ctx is done.
func (a *Agent) register(ctx context.Context) error {
	reg := a.Registration()
	for {
		err := a.deps.Coordinator.Register(ctx, reg, a.secret)
		if err == nil {
			a.log.Info("node registered", "cpus", reg.CPUs, "memory", reg.MemoryBytes, "cgroups", reg.CgroupMode)
			return nil
		}
		a.log.Warn("registering the node", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(a.cfg.HeartbeatInterval):
		}
	}
}

// memTotal reads MemTotal from a meminfo file, in bytes.
func memTotal(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kib, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("corral: %s: MemTotal %q: %w", path, fields[1], err)
			}
			return kib << 10, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("corral: %s has no MemTotal line", path)
}
