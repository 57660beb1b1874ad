package upstashtest

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Expiry times on the embedded backend.
//
// Redis 7 keeps an expiry as an absolute Unix time in milliseconds (int64)
// and refuses, with "ERR invalid expire time in '<cmd>' command", a value
// whose conversion to that form overflows: for SET EX/PX/EXAT/PXAT, SETEX,
// PSETEX and GETEX a value <= 0, seconds above MaxInt64/1000, or a
// relative time above MaxInt64 minus now; for EXPIRE, PEXPIRE, EXPIREAT
// and PEXPIREAT seconds outside ±MaxInt64/1000 or a relative time above
// MaxInt64 minus now (negative values delete the key). miniredis keeps a
// TTL as a time.Duration in nanoseconds, which overflows above about 292
// years (9223372036854 ms): SET k v PX 9223372036854775807 was accepted
// and the key dropped at once.
//
// On the embedded backend, the server therefore answers the values Redis
// refuses with Redis's error before they reach miniredis, and clamps an
// accepted relative expiry beyond miniredis's range to that range
// (9223372036854 ms, 9223372036 s; a negative one to -1). A clamped key
// then reports a PTTL of about 292 years instead of the value given; both
// mean "practically never". The same rules apply to commands inside Lua
// scripts, through the prelude (prelude.go). Values that are not integers
// as Redis reads them ("+5", "007", "-0") get Redis's "ERR value is not an
// integer or out of range". When the options around the value are
// malformed the command is left alone, so that the backend reports the
// syntax error as Redis would.

const (
	maxEmbeddedTTLMillis  = math.MaxInt64 / int64(time.Millisecond) // 9223372036854
	maxEmbeddedTTLSeconds = math.MaxInt64 / int64(time.Second)      // 9223372036
)

const errNotInteger = "ERR value is not an integer or out of range"

// redisInt parses b as Redis's string2ll does: an optional '-', digits
// without leading zeros, within int64; "-0" and "+1" are refused.
func redisInt(b []byte) (int64, bool) {
	s := string(b)
	if s == "0" {
		return 0, true
	}
	d := strings.TrimPrefix(s, "-")
	if d == "" || d[0] < '1' || d[0] > '9' || len(d) > 20 {
		return 0, false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

// expiryCheck applies the rules above to one command. It returns the
// command to send (with a clamped value when needed) or Redis's error text.
func expiryCheck(c command, nowMs int64) (command, string) {
	name := strings.ToLower(c.name)
	args := c.args // args[0] is the key
	switch name {
	case "expire", "pexpire", "expireat", "pexpireat":
		if len(args) < 2 {
			return c, ""
		}
		f := map[string]bool{}
		for _, a := range args[2:] {
			o := strings.ToUpper(string(a))
			if o != "NX" && o != "XX" && o != "GT" && o != "LT" {
				return c, ""
			}
			f[o] = true
		}
		if (f["NX"] && (f["XX"] || f["GT"] || f["LT"])) || (f["GT"] && f["LT"]) {
			return c, ""
		}
		secs := name == "expire" || name == "expireat"
		rel := name == "expire" || name == "pexpire"
		return expiryValue(c, 1, secs, rel, false, name, nowMs)
	case "setex", "psetex":
		if len(args) != 3 {
			return c, ""
		}
		return expiryValue(c, 1, name == "setex", true, true, name, nowMs)
	case "set", "getex":
		i := 1 // first option
		if name == "set" {
			i = 2
		}
		if len(args) < i {
			return c, ""
		}
		at, unit := -1, ""
		f := map[string]bool{}
		for i < len(args) {
			o := strings.ToUpper(string(args[i]))
			switch {
			case o == "EX" || o == "PX" || o == "EXAT" || o == "PXAT":
				if at >= 0 || i == len(args)-1 {
					return c, ""
				}
				at, unit = i+1, o
				i += 2
			case name == "set" && (o == "NX" || o == "XX" || o == "GET" || o == "KEEPTTL"),
				name == "getex" && o == "PERSIST" && !f[o]:
				f[o] = true
				i++
			default:
				return c, ""
			}
		}
		if at < 0 || (f["NX"] && f["XX"]) || f["KEEPTTL"] || f["PERSIST"] {
			return c, ""
		}
		return expiryValue(c, at, unit == "EX" || unit == "EXAT", unit == "EX" || unit == "PX", true, name, nowMs)
	}
	return c, ""
}

// expiryValue checks args[i], an expiry in seconds (secs) or milliseconds,
// relative to now (rel) or absolute; setlike selects the SET family's rule
// that the value must be positive.
func expiryValue(c command, i int, secs, rel, setlike bool, name string, nowMs int64) (command, string) {
	v, ok := redisInt(c.args[i])
	if !ok {
		return c, errNotInteger
	}
	bad := "ERR invalid expire time in '" + name + "' command"
	if setlike && v <= 0 {
		return c, bad
	}
	if secs && (v > math.MaxInt64/1000 || v < math.MinInt64/1000) {
		return c, bad
	}
	ms := v
	if secs {
		ms = v * 1000
	}
	if rel && ms > math.MaxInt64-nowMs {
		return c, bad
	}
	if !rel {
		return c, "" // miniredis saturates an absolute time far away
	}
	limit := maxEmbeddedTTLMillis
	if secs {
		limit = maxEmbeddedTTLSeconds
	}
	var clamped string
	switch {
	case v > limit:
		clamped = strconv.FormatInt(limit, 10)
	case v < -limit:
		clamped = "-1"
	default:
		return c, ""
	}
	args := make([][]byte, len(c.args))
	copy(args, c.args)
	args[i] = []byte(clamped)
	return command{name: c.name, args: args}, ""
}
