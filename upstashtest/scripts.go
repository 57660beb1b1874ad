package upstashtest

import (
	"crypto/sha1"
	"encoding/hex"
	"regexp"
	"strings"
	"sync"

	"github.com/gomodule/redigo/redis"
)

// Scripts are translated for the backend before they reach it, and the
// replies translated back, so that the client sees what Upstash would
// answer for the source it sent:
//
//   - A plain Redis 7 refuses the shebang flag allow-key-locking and
//     miniredis refuses any shebang, while the client computes the SHA-1
//     over the full source, shebang included. The server keeps a map from
//     the SHA-1 of each source it was given (EVAL, EVAL_RO, SCRIPT LOAD) to
//     the translated source it sent instead: EVALSHA and SCRIPT EXISTS are
//     rewritten through it, SCRIPT LOAD answers the SHA-1 of the source as
//     given, and error texts name that SHA-1. Whether a script is cached is
//     still decided by the backend, so NOSCRIPT comes exactly when Redis
//     would send it for the original source.
//   - The translated source starts with a one-line Lua prelude (see
//     prelude.go) that wraps redis.call and redis.pcall; line numbers in
//     error texts stay those of the original source.
//
// Which scripts are translated:
//
//   - Embedded backend: every script, so that the prelude can make
//     miniredis behave like Redis inside scripts (numbers passed to
//     redis.call formatted as Redis does, expiry times checked and clamped,
//     shebang flags).
//   - Real Redis: only scripts whose shebang sets allow-key-locking; every
//     other script reaches Redis unchanged.

// scriptFlags are the flags of a script's shebang.
type scriptFlags struct {
	shebang         bool // the source starts with a valid #!lua line
	noWrites        bool
	allowKeyLocking bool
	kept            []string // the flags Redis knows, in the given order
}

// redisScriptFlags are the shebang flags Redis 7 accepts.
var redisScriptFlags = setOf("no-writes", "allow-oom", "allow-stale", "no-cluster", "allow-cross-slot-keys")

// flagAllowKeyLocking is Upstash's own flag.
const flagAllowKeyLocking = "allow-key-locking"

// parseShebang reads the shebang line of src, as Redis 7 does, with
// Upstash's flag allowed. It returns the flags, the rest of the source
// after the shebang's newline, and Redis's error text for a bad shebang.
func parseShebang(src string) (f scriptFlags, rest string, errText string) {
	if !strings.HasPrefix(src, "#!") {
		return scriptFlags{}, src, ""
	}
	line, rest, found := strings.Cut(src, "\n")
	if !found {
		return scriptFlags{}, "", "ERR Invalid script shebang"
	}
	parts := splitArgs(line)
	if len(parts) == 0 || parts[0] != "#!lua" {
		engine := "#!"
		if len(parts) > 0 {
			engine = parts[0]
		}
		return scriptFlags{}, "", "ERR Unexpected engine in script shebang: " + engine
	}
	f.shebang = true
	for _, p := range parts[1:] {
		list, ok := strings.CutPrefix(p, "flags=")
		if !ok {
			return scriptFlags{}, "", "ERR Unknown lua shebang option: " + p
		}
		if list == "" {
			continue
		}
		for _, flag := range strings.Split(list, ",") {
			switch {
			case flag == flagAllowKeyLocking:
				f.allowKeyLocking = true
			case redisScriptFlags[flag]:
				if flag == "no-writes" {
					f.noWrites = true
				}
				f.kept = append(f.kept, flag)
			default:
				return scriptFlags{}, "", "ERR Unexpected flag in script shebang: " + flag
			}
		}
	}
	return f, rest, ""
}

// splitArgs splits a shebang line into words like Redis does: at white
// space, with double or single quotes grouping (the quotes are dropped).
// Escapes inside quotes are not interpreted.
func splitArgs(line string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// translated is the backend's version of one script source.
type translated struct {
	sha   string // SHA-1 of src (lower-case hex)
	src   string // what is sent to the backend
	flags scriptFlags
	same  bool // src is the original source (nothing to translate)
}

// scriptMap remembers the translation of every script source the server
// was given, by the SHA-1 of the original source.
type scriptMap struct {
	embedded bool

	mu   sync.RWMutex
	byID map[string]*translated
}

func newScriptMap(embedded bool) *scriptMap {
	return &scriptMap{embedded: embedded, byID: map[string]*translated{}}
}

func sha1Hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// translate returns the original SHA-1 of src and its translation, or
// Redis's error text for a bad shebang. The translation is remembered.
func (m *scriptMap) translate(src string) (string, *translated, string) {
	id := sha1Hex(src)
	m.mu.RLock()
	t := m.byID[id]
	m.mu.RUnlock()
	if t != nil {
		return id, t, ""
	}
	flags, rest, errText := parseShebang(src)
	if errText != "" {
		return id, nil, errText
	}
	t = &translated{flags: flags}
	switch {
	case m.embedded:
		// miniredis cannot parse a shebang: the prelude takes its line.
		if flags.shebang {
			t.src = prelude(true, flags.allowKeyLocking, flags.noWrites) + "\n" + rest
		} else {
			t.src = prelude(true, false, false) + " " + src
		}
	case flags.allowKeyLocking:
		line := "#!lua"
		if len(flags.kept) > 0 {
			line += " flags=" + strings.Join(flags.kept, ",")
		}
		t.src = line + "\n" + prelude(false, true, false) + " " + rest
	default:
		t.src, t.same = src, true
	}
	t.sha = id
	if !t.same {
		t.sha = sha1Hex(t.src)
	}
	m.mu.Lock()
	m.byID[id] = t
	m.mu.Unlock()
	return id, t, ""
}

// lookup returns the translation registered for the original SHA-1 id.
func (m *scriptMap) lookup(id string) *translated {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.byID[strings.ToLower(id)]
}

// replyFix turns a backend reply into the reply for the original command.
type replyFix func(interface{}) interface{}

// errorReply answers a command with a fixed error. The command it stands
// in for is sent as PING so that the replies of a pipeline or transaction
// keep their positions; Redis reports these errors when the command runs,
// also inside MULTI.
func errorReply(text string) (command, replyFix) {
	return command{name: "PING"}, func(interface{}) interface{} { return redis.Error(text) }
}

// errNoWriteFlag is Redis 7's refusal of EVAL_RO for a script with a
// shebang that does not declare no-writes.
const errNoWriteFlag = "ERR Can not execute a script with write flag using *_ro command."

// prepare rewrites the scripting commands among cmds for the backend. It
// returns the commands to send and, per command, the fixup of its reply
// (nil when none applies). Other commands are returned unchanged.
func (m *scriptMap) prepare(cmds []command) ([]command, []replyFix) {
	var send []command
	var fixes []replyFix
	for i, c := range cmds {
		nc, fix := m.prepareOne(c)
		if fix == nil {
			if send != nil {
				send[i] = nc
			}
			continue
		}
		if send == nil {
			send = append([]command(nil), cmds...)
			fixes = make([]replyFix, len(cmds))
		}
		send[i], fixes[i] = nc, fix
	}
	if send == nil {
		return cmds, nil
	}
	return send, fixes
}

func (m *scriptMap) prepareOne(c command) (command, replyFix) {
	switch c.name {
	case "EVAL", "EVAL_RO":
		if len(c.args) == 0 {
			return c, nil
		}
		id, t, errText := m.translate(string(c.args[0]))
		if errText != "" {
			return errorReply(errText)
		}
		if c.name == "EVAL_RO" && m.embedded && t.flags.shebang && !t.flags.noWrites {
			return errorReply(errNoWriteFlag)
		}
		if t.same {
			return c, nil
		}
		return withArg0(c, []byte(t.src)), scriptErrorFix(t.sha, id)
	case "EVALSHA", "EVALSHA_RO":
		if len(c.args) == 0 {
			return c, nil
		}
		id := strings.ToLower(string(c.args[0]))
		t := m.lookup(id)
		if t == nil || t.same {
			return c, nil
		}
		if c.name == "EVALSHA_RO" && m.embedded && t.flags.shebang && !t.flags.noWrites {
			return errorReply(errNoWriteFlag)
		}
		return withArg0(c, []byte(t.sha)), scriptErrorFix(t.sha, id)
	case "SCRIPT":
		if len(c.args) == 0 {
			return c, nil
		}
		switch strings.ToUpper(string(c.args[0])) {
		case "LOAD":
			if len(c.args) != 2 {
				return c, nil
			}
			id, t, errText := m.translate(string(c.args[1]))
			if errText != "" {
				return errorReply(errText)
			}
			if t.same {
				return c, nil
			}
			args := append([][]byte{c.args[0], []byte(t.src)}, c.args[2:]...)
			return command{name: c.name, args: args}, func(v interface{}) interface{} {
				if _, isErr := v.(redis.Error); isErr {
					return scriptErrorFix(t.sha, id)(v)
				}
				return []byte(id)
			}
		case "EXISTS":
			args := make([][]byte, len(c.args))
			copy(args, c.args)
			changed := false
			for i := 1; i < len(args); i++ {
				if t := m.lookup(string(args[i])); t != nil && !t.same {
					args[i], changed = []byte(t.sha), true
				}
			}
			if changed {
				return command{name: c.name, args: args}, func(v interface{}) interface{} { return v }
			}
		}
	}
	return c, nil
}

func withArg0(c command, arg0 []byte) command {
	args := make([][]byte, len(c.args))
	copy(args, c.args)
	args[0] = arg0
	return command{name: c.name, args: args}
}

// preludeError finds an error raised by the prelude in a script error
// text: its message, hex encoded, between a marker and a semicolon.
var preludeError = regexp.MustCompile(`upstashtest-error:([0-9a-f]*);`)

// scriptErrorFix returns the fixup of a translated script's reply: an
// error raised by the prelude becomes its own text (the backend wraps it
// in its own decoration), and the translated script's SHA-1 in an error
// text becomes the original's.
func scriptErrorFix(sentSHA, originalSHA string) replyFix {
	return func(v interface{}) interface{} {
		e, ok := v.(redis.Error)
		if !ok {
			return v
		}
		if m := preludeError.FindStringSubmatch(string(e)); m != nil {
			if msg, err := hex.DecodeString(m[1]); err == nil {
				return redis.Error(msg)
			}
		}
		if sentSHA != originalSHA {
			return redis.Error(strings.ReplaceAll(string(e), sentSHA, originalSHA))
		}
		return v
	}
}

// applyReplyFixes applies fixes (from prepare) to replies in place; a fix
// sees error replies too.
func applyReplyFixes(replies []interface{}, fixes []replyFix) {
	for i, f := range fixes {
		if f != nil && i < len(replies) {
			replies[i] = f(replies[i])
		}
	}
}

// dynamicKeyPrefix starts Upstash's refusal of a key outside KEYS in a
// script that sets allow-key-locking; the key follows it.
const dynamicKeyPrefix = "ERR Dynamic keys are not allowed in Lua scripts when 'allow-key-locking' flag is set. Key was: "
