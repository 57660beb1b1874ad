//go:build !linux

package upstashtest

import "os/exec"

// killWithParent is a no-op where the kernel has no parent-death signal:
// a private redis-server outlives a test process that dies without Close.
func killWithParent(*exec.Cmd) {}
