package upstashtest

import (
	"fmt"
	"strings"
)

// refusedCommands lists the commands the Upstash REST API does not serve,
// with the reason given in the error text. Everything else goes to Redis,
// which answers unknown commands itself.
var refusedCommands = map[string]string{}

func init() {
	for reason, names := range map[string][]string{
		"blocking commands are not supported by the Upstash REST API": {
			"BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP",
			"BZPOPMIN", "BZPOPMAX", "BZMPOP", "WAIT", "WAITAOF",
		},
		"transactions are only available through the /multi-exec endpoint": {
			"MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH",
		},
		"Pub/Sub subscriptions are not supported over a REST request": {
			"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE",
			"UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
		},
		"only PING and ECHO are supported from the connection commands": {
			"AUTH", "CLIENT", "HELLO", "QUIT", "RESET", "SELECT",
		},
		"server administration commands are not supported by the Upstash REST API": {
			"MONITOR", "SHUTDOWN", "DEBUG", "SYNC", "PSYNC", "REPLICAOF",
			"SLAVEOF", "FAILOVER", "CLUSTER", "READONLY", "READWRITE", "ASKING",
			"SWAPDB",
		},
	} {
		for _, n := range names {
			refusedCommands[n] = reason
		}
	}
}

// readCommands is the allowlist for the read-only token: the commands (or,
// for container commands, the subcommands) that cannot change data.
// KEYS and SCAN are left out on purpose: Upstash blocks them for read-only
// tokens.
var readCommands = setOf(
	// strings and bits
	"GET", "MGET", "STRLEN", "GETRANGE", "SUBSTR", "LCS", "BITCOUNT", "BITPOS",
	"GETBIT", "BITFIELD_RO",
	// generic
	"EXISTS", "TTL", "PTTL", "TYPE", "EXPIRETIME", "PEXPIRETIME", "DBSIZE",
	"RANDOMKEY", "DUMP",
	// lists
	"LRANGE", "LLEN", "LINDEX", "LPOS",
	// sets
	"SISMEMBER", "SMISMEMBER", "SMEMBERS", "SCARD", "SRANDMEMBER", "SINTER",
	"SINTERCARD", "SUNION", "SDIFF", "SSCAN",
	// hashes
	"HGET", "HMGET", "HGETALL", "HLEN", "HEXISTS", "HKEYS", "HVALS", "HSTRLEN",
	"HRANDFIELD", "HSCAN", "HTTL", "HPTTL", "HEXPIRETIME", "HPEXPIRETIME",
	// sorted sets
	"ZSCORE", "ZMSCORE", "ZRANGE", "ZRANGEBYSCORE", "ZRANGEBYLEX", "ZREVRANGE",
	"ZREVRANGEBYSCORE", "ZREVRANGEBYLEX", "ZCARD", "ZRANK", "ZREVRANK",
	"ZCOUNT", "ZLEXCOUNT", "ZRANDMEMBER", "ZINTER", "ZINTERCARD", "ZUNION",
	"ZDIFF", "ZSCAN",
	// streams (XREAD without BLOCK; BLOCK is refused for everyone)
	"XRANGE", "XREVRANGE", "XLEN", "XREAD", "XPENDING",
	// geo and hyperloglog
	"GEOPOS", "GEODIST", "GEOHASH", "GEOSEARCH", "GEORADIUS_RO",
	"GEORADIUSBYMEMBER_RO", "PFCOUNT",
	// scripting and server
	"EVAL_RO", "EVALSHA_RO", "FCALL_RO", "PING", "ECHO", "TIME",
)

// readSubcommands lists container commands whose listed subcommands are
// reads (an empty set means every subcommand is).
var readSubcommands = map[string]map[string]bool{
	"OBJECT": {},
	"XINFO":  {},
	"MEMORY": setOf("USAGE"),
	"SCRIPT": setOf("EXISTS"),
}

func setOf(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// isRead reports whether the command (upper-case name) cannot change data.
func isRead(name string, args [][]byte) bool {
	if readCommands[name] {
		return true
	}
	subs, ok := readSubcommands[name]
	if !ok {
		return false
	}
	if len(subs) == 0 {
		return true
	}
	return len(args) > 0 && subs[strings.ToUpper(string(args[0]))]
}

// checkCommand returns the error text for a command that must not reach
// Redis, or "" when it may run. name is upper case.
func checkCommand(name string, args [][]byte, readOnly bool) string {
	if reason, ok := refusedCommands[name]; ok {
		return fmt.Sprintf("ERR Command is not available: '%s' (%s)", strings.ToLower(name), reason)
	}
	if (name == "XREAD" || name == "XREADGROUP") && hasBlockOption(args) {
		return fmt.Sprintf("ERR Command is not available: '%s' with BLOCK (blocking commands are not supported by the Upstash REST API)", strings.ToLower(name))
	}
	if readOnly && !isRead(name, args) {
		return noPermText(name)
	}
	return ""
}

// noPermText is the error a read-only token gets for a write command, the
// Redis ACL text Upstash passes through.
func noPermText(name string) string {
	return fmt.Sprintf("NOPERM this user has no permissions to run the '%s' command or its subcommand", strings.ToLower(name))
}

// hasBlockOption reports whether XREAD/XREADGROUP arguments contain a BLOCK
// option before STREAMS.
func hasBlockOption(args [][]byte) bool {
	for _, a := range args {
		switch strings.ToUpper(string(a)) {
		case "BLOCK":
			return true
		case "STREAMS":
			return false
		}
	}
	return false
}
