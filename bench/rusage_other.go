//go:build !unix

package main

import "os/exec"

// peakRSS is not measured on this platform.
func peakRSS(cmd *exec.Cmd) int64 { return 0 }
