package events

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheckSwapLimit(t *testing.T) {
	const (
		m32  = "33554432"
		m64  = "67108864"
		m128 = "134217728"
	)
	ok := [][3]string{
		{m64, m128, "swap_hard_limit"},
		{m64, m64, "swap_hard_limit"}, // equal: no swap at all, as libvirt allows
		{m64, Unlimited, "hard_limit"},
		{Unlimited, Unlimited, "hard_limit"},
		{"junk", m32, "hard_limit"}, // not canonical: Canonical refuses it, not this check
	}
	for _, c := range ok {
		if err := CheckSwapLimit(c[0], c[1], c[2]); err != nil {
			t.Errorf("CheckSwapLimit(%s, %s) = %v, want nil", c[0], c[1], err)
		}
	}
	bad := []struct {
		hard, swap, blame string
		want              []string
	}{
		{m64, m32, "swap_hard_limit", []string{`swap_hard_limit "33554432"`, "(32MiB)", "(64MiB)", "--swap-hard-limit of 64MiB or more"}},
		{m128, m64, "hard_limit", []string{`hard_limit "134217728"`, "(64MiB)", "(128MiB)", "--hard-limit of 64MiB or less"}},
		{Unlimited, m128, "hard_limit", []string{`hard_limit "unlimited"`, "(128MiB)", "(unlimited)", "--hard-limit unlimited --swap-hard-limit unlimited"}},
		{Unlimited, m128, "swap_hard_limit", []string{`swap_hard_limit "134217728"`, "--hard-limit of 128MiB or less"}},
	}
	for _, c := range bad {
		err := CheckSwapLimit(c.hard, c.swap, c.blame)
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("CheckSwapLimit(%s, %s) = %v, want ErrInvalid", c.hard, c.swap, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("CheckSwapLimit(%s, %s) = %q, lacks %q", c.hard, c.swap, err, w)
			}
		}
	}
}

func TestGuestTuningFailedValidate(t *testing.T) {
	good := GuestTuningFailed{Node: "n1", Generation: 5, Knob: "swap_hard_limit", Value: "33554432", Error: "write: invalid argument"}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid report refused: %v", err)
	}
	placed := good
	placed.Knob = "cpuset_cpus" // a host applies it too, so it may fail too
	if err := placed.Validate(); err != nil {
		t.Errorf("cpuset_cpus refused: %v", err)
	}
	for name, mut := range map[string]func(*GuestTuningFailed){
		"no node":     func(p *GuestTuningFailed) { p.Node = "" },
		"bad knob":    func(p *GuestTuningFailed) { p.Knob = "blkio_bandwidth" },
		"no value":    func(p *GuestTuningFailed) { p.Value = "" },
		"ctl value":   func(p *GuestTuningFailed) { p.Value = "1\n2" },
		"no error":    func(p *GuestTuningFailed) { p.Error = "" },
		"long error":  func(p *GuestTuningFailed) { p.Error = strings.Repeat("x", MaxTuningError+1) },
		"not utf8":    func(p *GuestTuningFailed) { p.Error = "\xff" },
		"long value":  func(p *GuestTuningFailed) { p.Value = strings.Repeat("9", 65) },
		"bad node id": func(p *GuestTuningFailed) { p.Node = "../n1" },
	} {
		p := good
		mut(&p)
		if err := p.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
	}
}

func TestTruncateError(t *testing.T) {
	if s := TruncateError("short"); s != "short" {
		t.Errorf("short text changed: %q", s)
	}
	long := strings.Repeat("é", MaxTuningError) // two bytes each
	s := TruncateError(long)
	if len(s) > MaxTuningError || !utf8.ValidString(s) || !strings.HasSuffix(s, "…") {
		t.Errorf("TruncateError: %d bytes, valid=%v, %q…", len(s), utf8.ValidString(s), s[len(s)-8:])
	}
	p := GuestTuningFailed{Node: "n1", Knob: "hard_limit", Value: "unlimited", Error: s}
	if err := p.Validate(); err != nil {
		t.Errorf("a truncated error is refused: %v", err)
	}
}
