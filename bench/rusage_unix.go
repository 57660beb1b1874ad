//go:build unix

package main

import (
	"os/exec"
	"runtime"
	"syscall"
)

// peakRSS returns the peak resident set size of an exited child in bytes
// (getrusage's ru_maxrss: KiB on Linux, bytes on macOS), or 0 when unknown.
func peakRSS(cmd *exec.Cmd) int64 {
	if cmd.ProcessState == nil {
		return 0
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	if runtime.GOOS == "darwin" {
		return int64(ru.Maxrss)
	}
	return int64(ru.Maxrss) * 1024
}
