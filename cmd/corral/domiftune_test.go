package main

import (
	"strings"
	"testing"
)

func TestDomiftuneUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"domiftune", "web", "--outbound", "1,2,3,4"}, "is not average[,peak[,burst]]"},
		{[]string{"domiftune", "web", "--inbound", ",5"}, "is not average[,peak[,burst]]"},
		{[]string{"domiftune", "web", "--outbound", "fast"}, `outbound_average "fast" is invalid`},
		{[]string{"domiftune", "Web"}, `guest name "Web" is invalid`},
	} {
		_, stderr, code := runInProcess(t, c.args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != 1 || !strings.HasPrefix(first, "corral: ") || !strings.Contains(first, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 1 and corral: ...%s", c.args, code, first, c.want)
		}
	}
}
