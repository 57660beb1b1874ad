package upstash

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinel errors. Every error this package returns that belongs to one of
// these classes matches it with errors.Is, however deeply it is wrapped.
var (
	// ErrNil reports a nil reply: the key does not exist.
	ErrNil = errors.New("upstash: nil reply")

	// ErrUnauthorized reports an HTTP 401: the REST token is wrong, missing or
	// revoked. The token itself never appears in any error text.
	ErrUnauthorized = errors.New("upstash: unauthorized: the REST token was refused")

	// ErrProtocol reports a reply that does not follow the REST protocol: a body
	// that is not JSON, a missing "result", a pipeline reply of the wrong length,
	// a reply of another type than the caller asked for, a redirect (never
	// followed), a compressed reply (never asked for), or a reply larger than
	// Limits.MaxResponseBytes as read or once decoded.
	ErrProtocol = errors.New("upstash: protocol error")

	// ErrRequestTooLarge reports a request over the configured limits (refused
	// locally before sending) or one the server refused for its size.
	ErrRequestTooLarge = errors.New("upstash: request too large")

	// ErrOutcomeUnknown reports a request that may or may not have been applied,
	// and that was not safe to send again: it may have reached the server and
	// its reply was lost (the connection failed after the request was written,
	// or while the reply was read), the server answered 5xx, or it answered 2xx
	// with a reply that could not be read or decoded (which then also matches
	// ErrProtocol). Read the state back before acting on it.
	ErrOutcomeUnknown = errors.New("upstash: outcome unknown (the request may or may not have been applied)")

	// ErrTransactionDiscarded reports a transaction that the server refused as
	// a whole (for example a syntax error in one command): nothing ran.
	ErrTransactionDiscarded = errors.New("upstash: transaction discarded")

	// ErrInvalidArgument reports an argument the client refuses to send, such
	// as a string that is not valid UTF-8 or a value of an unsupported type.
	ErrInvalidArgument = errors.New("upstash: invalid argument")

	// ErrConfig reports a configuration problem: a missing or malformed URL or
	// token, or an option out of range.
	ErrConfig = errors.New("upstash: invalid configuration")
)

// Error is an error reply from Upstash: a Redis error for one command, or an
// HTTP-level refusal of a whole request. Its text names the command but never
// echoes argument values or the token. For a 401 built by the client, the
// text also says where the refused token came from (the variable
// ConfigFromEnv read, or Config.Token) and what to check.
type Error struct {
	// Command is the upper-case command name ("SET", "EVALSHA"), or
	// "PIPELINE" / "MULTI-EXEC" for an error that concerns a whole batch.
	Command string
	// Index is the command's position in a pipeline or transaction, or -1.
	Index int
	// Status is the HTTP status of the response that carried the error (200
	// for an error element inside a pipeline reply).
	Status int
	// Code is the leading upper-case word of the Redis error text ("ERR",
	// "WRONGTYPE", "NOSCRIPT", "NOPERM", "WRONGPASS"), or "" if there is none.
	Code string
	// Message is the error text as the server sent it, except that the
	// arguments Redis quotes in its unknown-command error are cut off.
	Message string

	// hint says what to check, for errors whose cause is on the caller's
	// side (a refused token); it never holds the token.
	hint string
}

// Error returns "upstash: [command N ]COMMAND: message". A 401 reads
// "upstash: COMMAND: HTTP 401 unauthorized (message): hint".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(errorPrefix)
	if e.Index >= 0 {
		fmt.Fprintf(&b, "command %d ", e.Index)
	}
	if e.Command != "" {
		b.WriteString(e.Command)
		b.WriteString(": ")
	}
	msg := withoutArgs(e.Message)
	switch {
	case e.Status == http.StatusUnauthorized:
		b.WriteString("HTTP 401 unauthorized")
		if msg != "" && !strings.EqualFold(msg, "unauthorized") {
			fmt.Fprintf(&b, " (%s)", msg)
		}
	case msg != "":
		b.WriteString(msg)
	default:
		fmt.Fprintf(&b, "HTTP %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.hint != "" {
		b.WriteString(": ")
		b.WriteString(e.hint)
	}
	return b.String()
}

// Is makes errors.Is match the sentinels that describe this error.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrRequestTooLarge:
		return e.Status == http.StatusRequestEntityTooLarge ||
			strings.Contains(e.Message, "max request size exceeded")
	case ErrTransactionDiscarded:
		// Only a refusal means nothing ran: a 5xx may come after the
		// transaction ran, and a 401 is reported as ErrUnauthorized.
		return e.Command == "MULTI-EXEC" && e.Index < 0 && e.Status < 500 && e.Status != http.StatusUnauthorized
	}
	return false
}

// argsQuote starts the part of Redis's unknown-command error that quotes the
// command's first arguments ("ERR unknown command 'X', with args beginning
// with: 'secret' ").
const argsQuote = ", with args beginning with:"

// withoutArgs removes quoted arguments from a server error text.
func withoutArgs(msg string) string {
	if i := strings.Index(msg, argsQuote); i >= 0 {
		return msg[:i]
	}
	return msg
}

// IsNoScript reports whether the error is Redis's NOSCRIPT: the script is
// not in the server's cache. Only the error code counts: a script whose own
// error text mentions "noscript" must not be run a second time as EVAL.
func (e *Error) IsNoScript() bool { return e.Code == "NOSCRIPT" }

// newError builds an *Error from a Redis error text, with tok cut out of it.
func newError(tok secret, command string, index, status int, message string) *Error {
	return &Error{Command: command, Index: index, Status: status, Code: errorCode(message), Message: tok.clean(withoutArgs(message))}
}

// errorCode returns the leading all-caps word of a Redis error text.
func errorCode(msg string) string {
	word := msg
	if i := strings.IndexByte(msg, ' '); i >= 0 {
		word = msg[:i]
	}
	if word == "" {
		return ""
	}
	for _, r := range word {
		if (r < 'A' || r > 'Z') && r != '_' {
			return ""
		}
	}
	return word
}

// isNoScript reports whether err is a NOSCRIPT reply.
func isNoScript(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	return errors.As(err, &e) && e.IsNoScript()
}

// protocolErrorf wraps ErrProtocol with a description:
// "upstash: protocol error: <description>".
func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// errorPrefix starts the text of every error this package returns, once.
const errorPrefix = "upstash: "

// callError is the error of one call (a command, a pipeline or a
// transaction): "upstash: LABEL: detail", with the label named once however
// many layers added to the detail. errors.Is and errors.As see every error
// it was built from.
type callError struct {
	label  string
	detail string
	errs   []error
}

func (e *callError) Error() string {
	if e.label == "" {
		return errorPrefix + e.detail
	}
	return errorPrefix + e.label + ": " + e.detail
}

func (e *callError) Unwrap() []error { return e.errs }

// callErrorf returns the error "upstash: LABEL: " + format, where format's
// verbs are fmt's and each error argument (written with %w) is printed
// without its own "upstash: " prefix, and without label when it names it
// first, and is matched by errors.Is and errors.As.
func callErrorf(label, format string, args ...any) error {
	e := &callError{label: label}
	shown := make([]any, len(args))
	for i, a := range args {
		if err, ok := a.(error); ok {
			e.errs = append(e.errs, err)
			shown[i] = errorDetail(err, label)
			continue
		}
		shown[i] = a
	}
	e.detail = fmt.Sprintf(strings.ReplaceAll(format, "%w", "%s"), shown...)
	return e
}

// withLabel returns err as an error of the call label: err itself when its
// text already starts with "upstash: LABEL: ", else "upstash: LABEL: " and
// err's text without its own prefix.
func withLabel(label string, err error) error {
	if err == nil || label == "" || strings.HasPrefix(err.Error(), errorPrefix+label+": ") {
		return err
	}
	return callErrorf(label, "%w", err)
}

// errorDetail is err's text without its "upstash: " prefix and, when it
// names label first, without the label.
func errorDetail(err error, label string) string {
	s := strings.TrimPrefix(err.Error(), errorPrefix)
	if label != "" {
		s = strings.TrimPrefix(s, label+": ")
	}
	return s
}

// secret is the REST token, kept so that text the server sent (an error
// reply, a body, a header) can be cleaned of it before it reaches an error
// or a log line: a server or proxy that echoes the token must not put it
// in a log.
type secret string

// minSecretLen is the shortest token looked for in texts: a shorter one
// would cut ordinary words apart, and is no secret anyway.
const minSecretLen = 8

// redactedToken replaces the token in texts.
const redactedToken = "[REDACTED]"

// in reports whether text holds the token.
func (s secret) in(text string) bool {
	return len(s) >= minSecretLen && strings.Contains(text, string(s))
}

// clean returns text with every occurrence of the token replaced.
func (s secret) clean(text string) string {
	if !s.in(text) {
		return text
	}
	return strings.ReplaceAll(text, string(s), redactedToken)
}

// scrub is the last guard before an error leaves the client: if its text
// still holds the token, the caller gets the cleaned text, with errors.Is
// and errors.As answered by the original error but no way to unwrap it and
// print it.
func (s secret) scrub(err error) error {
	if err == nil || !s.in(err.Error()) {
		return err
	}
	return &scrubbedError{text: s.clean(err.Error()), err: err}
}

type scrubbedError struct {
	text string
	err  error
}

func (e *scrubbedError) Error() string        { return e.text }
func (e *scrubbedError) Is(target error) bool { return errors.Is(e.err, target) }
func (e *scrubbedError) As(target any) bool   { return errors.As(e.err, target) }

// truncate shortens s for inclusion in an error text.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
