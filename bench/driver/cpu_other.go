//go:build !unix

package main

// cpuTime is not measured on this platform.
func cpuTime() (user, sys float64) { return 0, 0 }
