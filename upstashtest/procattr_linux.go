package upstashtest

import (
	"os/exec"
	"syscall"
)

// killWithParent makes the kernel kill a private redis-server when the test
// process dies without calling Close (a test binary that times out, for
// example), so that no orphan keeps running.
func killWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
