package events

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// GuestTuningFailed is the agent's answer to a tuning its host refused:
// the knob, the value it tried (canonical form) and the host's error, such
// as the kernel's "invalid argument" for a memory limit. It is reported
// once per guest, generation, knob and value.
type GuestTuningFailed struct {
	Node       string `json:"node"`
	Generation uint64 `json:"generation"`
	Knob       string `json:"knob"`
	Value      string `json:"value"`
	Error      string `json:"error"`
}

func (*GuestTuningFailed) EventType() Type { return TypeGuestTuningFailed }

// MaxTuningError bounds the error text of a [GuestTuningFailed]; an agent
// cuts a longer one with [TruncateError].
const MaxTuningError = 1024

// Validate checks a failure report: a node, a knob a host may apply, a
// value and an error of bounded length.
func (p *GuestTuningFailed) Validate() error {
	if err := ValidateID("node", p.Node); err != nil {
		return err
	}
	if err := LookupAppliedKnob(p.Knob); err != nil {
		return err
	}
	if p.Value == "" {
		return fieldErr("value", "", "name the value the host refused")
	}
	if err := shortText("value", p.Value); err != nil {
		return err
	}
	switch {
	case p.Error == "":
		return fieldErr("error", "", "say why the host refused the value")
	case len(p.Error) > MaxTuningError:
		return fieldErr("error", p.Error[:80]+"…", fmt.Sprintf("at most %d bytes; cut it with TruncateError", MaxTuningError))
	case !utf8.ValidString(p.Error):
		return fieldErr("error", strconv.Quote(p.Error), "must be UTF-8")
	}
	return nil
}

// TruncateError cuts s to at most [MaxTuningError] bytes on a rune
// boundary, marking the cut.
func TruncateError(s string) string {
	if len(s) <= MaxTuningError {
		return s
	}
	const mark = "…"
	cut := MaxTuningError - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// CheckSwapLimit checks a guest's memory limits as libvirt's
// virDomainSetMemoryParameters does: swap_hard_limit counts memory plus
// swap, so it must be at least hard_limit; unlimited is above every size.
// hard and swap are canonical values (bytes or "unlimited"); blame names
// the knob the caller changed, which the error is about. libvirt checks
// nothing else between the three limits (soft_limit may exceed hard_limit,
// and hard_limit need not cover the guest's memory), so neither does this.
func CheckSwapLimit(hard, swap, blame string) error {
	h, hok := limitBytes(hard)
	s, sok := limitBytes(swap)
	if !hok || !sok || swap == Unlimited || hard != Unlimited && h <= s {
		return nil
	}
	show := func(v string, n int64) string {
		if v == Unlimited {
			return Unlimited
		}
		return FormatSize(n)
	}
	why := fmt.Sprintf("swap_hard_limit (%s) counts memory plus swap and must be at least hard_limit (%s)", show(swap, s), show(hard, h))
	var fix string
	switch {
	case hard == Unlimited && blame == "swap_hard_limit":
		fix = fmt.Sprintf("give --hard-limit of %s or less in the same command, or leave --swap-hard-limit unlimited", FormatSize(s))
	case hard == Unlimited:
		fix = "to lift hard_limit, lift swap_hard_limit too: --hard-limit unlimited --swap-hard-limit unlimited"
	case blame == "swap_hard_limit":
		fix = fmt.Sprintf("give --swap-hard-limit of %s or more, or lower --hard-limit in the same command", FormatSize(h))
	default:
		fix = fmt.Sprintf("give --hard-limit of %s or less, or raise --swap-hard-limit in the same command", FormatSize(s))
	}
	value := swap
	if blame != "swap_hard_limit" {
		value = hard
	}
	return fieldErr(blame, value, why+"; "+fix)
}

// limitBytes reads a canonical memory limit; ok is false for text that is
// neither bytes nor unlimited.
func limitBytes(v string) (n int64, ok bool) {
	if v == Unlimited {
		return -1, true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n >= 0
}
