package cgroupdriver

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParseDeviceRule(t *testing.T) {
	for in, want := range map[string]string{
		"c 1:3 rw":     "c 1:3 rw",
		"b 254:0 r":    "b 254:0 r",
		"c 136:* rwm":  "c 136:* rwm",
		"b *:* m":      "b *:* m",
		"a":            "a *:* rwm",
		"  c 1:3  rw ": "c 1:3 rw",
	} {
		r, err := ParseDeviceRule(in)
		if err != nil || r.String() != want {
			t.Errorf("ParseDeviceRule(%q) = %q, %v; want %q", in, r, err, want)
		}
	}
	for _, bad := range []string{"", "c", "x 1:3 rw", "c 1:3", "c 1-3 rw", "c 1:3 rwx", "c 1:3 rr", "c -2:3 r",
		"c 1:4294967296 r", "cc 1:3 r", "c a:3 r", "c 1:3 "} {
		if _, err := ParseDeviceRule(bad); !errors.Is(err, ErrInvalidResources) {
			t.Errorf("ParseDeviceRule(%q) accepted: %v", bad, err)
		}
	}
}

func TestDeviceRuleJSON(t *testing.T) {
	acl := DeviceACL{Allow: DefaultDeviceRules(true)}
	b, err := json.Marshal(acl)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"allow":["c 1:3 rw","c 1:5 rw","c 1:7 rw","c 1:8 rw","c 1:9 rw","c 5:0 rw","c 5:2 rw","c 136:* rw","c 10:232 rw"]}`
	if string(b) != want {
		t.Errorf("got %s\nwant %s", b, want)
	}
	var back DeviceACL
	if err := json.Unmarshal(b, &back); err != nil || len(back.Allow) != 9 || back.Allow[7].Minor != AnyDevice {
		t.Errorf("round trip: %+v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"allow":["q 1:1 r"]}`), &back); err == nil {
		t.Error("bad rule decoded")
	}
}

func TestCPUSet(t *testing.T) {
	for in, want := range map[string]string{"0": "0", "0-3": "0-3", "3,0-1,2": "0-3", "0,2,4-5": "0,2,4-5", "7-7": "7"} {
		s, err := parseCPUSet(in)
		if err != nil || s.String() != want {
			t.Errorf("parseCPUSet(%q) = %q, %v; want %q", in, s, err, want)
		}
	}
	for _, bad := range []string{"a", "1-", "3-1", "-1", "1,,2", "99999"} {
		if _, err := parseCPUSet(bad); err == nil {
			t.Errorf("parseCPUSet(%q) accepted", bad)
		}
	}
}

func TestSharesToWeight(t *testing.T) {
	for shares, want := range map[uint64]uint64{2: 1, 1024: 100, 262144: 10000, 512: 59, 2048: 174} {
		if got := SharesToWeight(shares); got != want {
			t.Errorf("SharesToWeight(%d) = %d, want %d", shares, got, want)
		}
	}
	prev := uint64(0)
	for s := uint64(2); s <= 262144; s += 97 {
		w := SharesToWeight(s)
		if w < prev || w < 1 || w > 10000 {
			t.Fatalf("SharesToWeight(%d) = %d after %d: not monotonic in 1..10000", s, w, prev)
		}
		prev = w
	}
}

func TestDeviceProgramShape(t *testing.T) {
	prog := deviceProgram([]DeviceRule{{Type: 'c', Major: 1, Minor: 3, Access: "rw"}})
	// 6 loads, type check, 3 access insns, major, minor, accept (2), deny (2).
	if len(prog) != 6+1+3+2+2+2 {
		t.Fatalf("len %d: %+v", len(prog), prog)
	}
	for i, in := range prog {
		if in.Code == opJne32K && i+1+int(in.Off) != 14 {
			t.Errorf("insn %d jumps to %d, want the deny block at 14", i, i+1+int(in.Off))
		}
	}
	if all := deviceProgram([]DeviceRule{{Type: 'a', Major: AnyDevice, Minor: AnyDevice, Access: "rwm"}, {Type: 'c', Major: 1, Minor: 1, Access: "r"}}); len(all) != 8 {
		t.Errorf("allow-all must end the program: %d insns", len(all))
	}
}
