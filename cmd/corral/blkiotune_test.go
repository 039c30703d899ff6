package main

import (
	"strings"
	"testing"
)

func TestBlkioValues(t *testing.T) {
	current := map[string]string{"device_write_bytes_sec": "/dev/vda,1048576,/dev/vdb,2048"}
	got, err := blkioValues(map[string]string{
		"blkio_weight":           " 500",
		"device_write_bytes_sec": "/dev/vdb,0,/dev/vdc,4M", // vda kept, vdb removed
		"device_read_iops_sec":   "/dev/vda,200",
	}, func(k string) string { return current[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"blkio_weight":           "500",
		"device_write_bytes_sec": "/dev/vda,1048576,/dev/vdc,4194304",
		"device_read_iops_sec":   "/dev/vda,200",
	}
	if len(got) != len(want) {
		t.Errorf("blkioValues = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestBlkiotuneUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"blkiotune", "web", "--weight", "5000"}, `blkio_weight "5000" is invalid: use a whole number from 100 to 1000`},
		{[]string{"blkiotune", "web", "--device-weights", "/dev/vda"}, "give PATH,VALUE pairs"},
		{[]string{"blkiotune", "web", "--device-read-bytes-sec", "vda,1M"}, "absolute device path below /dev/"},
		{[]string{"blkiotune", "web", "--device-write-iops-sec", ""}, "--device-write-iops-sec needs PATH,VALUE pairs"},
		{[]string{"blkiotune", "Web"}, `guest name "Web" is invalid`},
	} {
		_, stderr, code := runInProcess(t, c.args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != 1 || !strings.HasPrefix(first, "corral: ") || !strings.Contains(first, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 1 and corral: ...%s", c.args, code, first, c.want)
		}
	}
}
