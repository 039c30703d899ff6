package cgroupdriver_test

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
)

// reportSelf is the "self" helper: its groups, whether the shim's variable
// is in its environment, and whether it was in the environment this
// process was exec'd with (/proc/self/environ keeps that one): a process
// the shim continued as has it there, one the shim exec'd has not.
func reportSelf() int {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	environ, err := os.ReadFile("/proc/self/environ")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	_, inEnv := os.LookupEnv("_CORRAL_CGROUP_SHIM")
	fmt.Print(string(raw))
	fmt.Printf("getenv=%v exec-environ=%v\n", inEnv, bytes.Contains(environ, []byte("_CORRAL_CGROUP_SHIM=")))
	return 0
}

// TestHostEnterSelfV1: a command that is this binary itself is not exec'd
// a second time by the v1 shim: the process that joined the groups goes
// on into main's next role, in every group, without the shim's variable.
func TestHostEnterSelfV1(t *testing.T) {
	d, rep := hostDriver(t)
	if len(rep.Hierarchies) == 1 && rep.Hierarchies[0].Version == 2 {
		t.Skip("pure cgroup v2: Start clones into the group, there is no shim")
	}
	g := create(t, d, "self")
	out, err := run(t, d, g, []string{helperEnv + "=self"}, "/proc/self/exe")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	checkSelfCgroup(t, rep, partitionOf(t, d, g), g, out)
	if !strings.Contains(out, "getenv=false exec-environ=true") {
		t.Errorf("want the shim's own process to go on (its exec environment has the shim's variable, its environment not):\n%s", out)
	}
}
