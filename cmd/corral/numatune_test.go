package main

import (
	"strings"
	"testing"
)

// The pin tables are printed as virsh prints them.
func TestPrintPinsMatchesVirsh(t *testing.T) {
	var b strings.Builder
	if err := printEmulatorPin(&b, "0-1"); err != nil {
		t.Fatal(err)
	}
	if err := printVCPUPins(&b, [][2]string{{"0", "0"}, {"1", "*"}}); err != nil {
		t.Fatal(err)
	}
	want := "emulator: CPU Affinity\n----------------------------------\n       *: 0-1\n" +
		" VCPU   CPU Affinity\n----------------------\n 0      0\n 1      *\n"
	if b.String() != want {
		t.Errorf("printed\n%s\nwant\n%s", b.String(), want)
	}
}
