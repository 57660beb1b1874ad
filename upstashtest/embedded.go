package upstashtest

import (
	"bytes"
	"math"
	"strconv"
	"strings"
)

// Fixups for the few places where miniredis answers differently from Redis
// in a way a REST client would see once the embedded clock runs in real
// time. They apply to the embedded backend only, to replies of commands
// sent over REST (not to Lua scripts).
//
//   - TTL: miniredis truncates the remaining time to whole seconds, Redis
//     rounds it ((ms+500)/1000), so a key set with EX 100 reads 99 a
//     millisecond later. TTL is sent as PTTL and rounded here.
//   - Scores and other float replies: miniredis prints 1700000000000 as
//     "1.7e+12"; Redis uses exponent notation only where %.17g does. Float
//     replies in exponent form within that range are rewritten in plain
//     notation (same digits, same value).

// embeddedFixup returns the command to send instead of c, and a function
// that turns its reply into what Redis would have answered (nil when no
// fixup applies).
func embeddedFixup(c command) (command, func(interface{}) interface{}) {
	switch c.name {
	case "TTL":
		return command{name: "PTTL", args: c.args}, roundTTL
	case "ZSCORE", "ZINCRBY", "INCRBYFLOAT", "HINCRBYFLOAT", "GEODIST":
		return c, fixFloat
	case "ZADD":
		if hasArg(c.args, "INCR") {
			return c, fixFloat
		}
	case "ZMSCORE":
		return c, func(v interface{}) interface{} {
			return mapArray(v, func(i int, e interface{}) interface{} { return fixFloat(e) })
		}
	case "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZUNION", "ZINTER", "ZDIFF", "ZRANDMEMBER":
		if hasArg(c.args, "WITHSCORES") {
			return c, fixOddScores
		}
	case "ZPOPMIN", "ZPOPMAX":
		return c, fixOddScores
	case "ZRANK", "ZREVRANK":
		if hasArg(c.args, "WITHSCORE") {
			return c, func(v interface{}) interface{} {
				return mapArray(v, func(i int, e interface{}) interface{} {
					if i == 1 {
						return fixFloat(e)
					}
					return e
				})
			}
		}
	case "ZMPOP":
		// [key, [[member, score], ...]]
		return c, func(v interface{}) interface{} {
			return mapArray(v, func(i int, e interface{}) interface{} {
				if i != 1 {
					return e
				}
				return mapArray(e, func(_ int, pair interface{}) interface{} {
					return fixOddScores(pair)
				})
			})
		}
	}
	return c, nil
}

func hasArg(args [][]byte, want string) bool {
	for _, a := range args {
		if strings.EqualFold(string(a), want) {
			return true
		}
	}
	return false
}

func mapArray(v interface{}, f func(int, interface{}) interface{}) interface{} {
	arr, ok := v.([]interface{})
	if !ok {
		return v
	}
	out := make([]interface{}, len(arr))
	for i, e := range arr {
		out[i] = f(i, e)
	}
	return out
}

func fixOddScores(v interface{}) interface{} {
	return mapArray(v, func(i int, e interface{}) interface{} {
		if i%2 == 1 {
			return fixFloat(e)
		}
		return e
	})
}

func roundTTL(v interface{}) interface{} {
	ms, ok := v.(int64)
	if !ok || ms < 0 {
		return v // -1 (no expiry), -2 (no key) or an error
	}
	return (ms + 500) / 1000
}

// fixFloat rewrites a float reply in exponent form whose decimal exponent
// is within [-4, 17) into plain notation, as Redis prints it.
func fixFloat(v interface{}) interface{} {
	b, ok := v.([]byte)
	if !ok || !bytes.ContainsAny(b, "eE") {
		return v
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) || f == 0 {
		return v
	}
	exp := int(math.Floor(math.Log10(math.Abs(f))))
	if exp < -4 || exp >= 17 {
		return v
	}
	return []byte(strconv.FormatFloat(f, 'f', -1, 64))
}
