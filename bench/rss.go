package main

import (
	"os"
	"strconv"
	"strings"
)

// peakRSS returns the peak resident set size of a running process in
// bytes, VmHWM in /proc/PID/status, or 0 where there is no /proc.
//
// It is read while the process is still running, rather than taken from
// getrusage's ru_maxrss after it exits: Go starts children with vfork, and
// Linux folds the parent's peak RSS into the child's ru_maxrss at exec, so
// a small child would report the harness's size.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n * 1024
			}
		}
	}
	return 0
}
