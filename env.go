package upstash

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/caarlos0/env/v11"
)

// Environment variable names the client reads. The UPSTASH_* names are the
// ones the Upstash console shows; the KV_* names are the ones the Upstash
// integration on the Vercel Marketplace sets.
const (
	EnvURL                 = "UPSTASH_REDIS_REST_URL"
	EnvToken               = "UPSTASH_REDIS_REST_TOKEN"
	EnvVercelURL           = "KV_REST_API_URL"
	EnvVercelToken         = "KV_REST_API_TOKEN"
	EnvVercelReadOnlyToken = "KV_REST_API_READ_ONLY_TOKEN"
)

// Config names one Upstash Redis database. Build it by hand or with
// ConfigFromEnv; New checks it. New takes the URL and token exactly as
// given: whitespace, control characters or quotes anywhere in them are
// refused (ConfigFromEnv trims the whitespace around a variable's value
// before the same check).
type Config struct {
	// URL is the REST URL, https://<name>.upstash.io. Trailing slashes are
	// removed. A path is kept as a prefix of every request's path:
	// https://host/v2 sends commands to /v2 and pipelines to /v2/pipeline.
	URL string
	// Token is the REST token (full access or read-only).
	Token string `json:"-"`
	// AllowInsecureHTTP permits a plain http:// URL to a host other than a
	// loopback address. Without it (the default) such a URL is refused,
	// because the token would cross the network in clear text.
	AllowInsecureHTTP bool

	// tokenVar names the environment variable ConfigFromEnv read Token
	// from, so that a 401 can say which one to check; "" for a Config built
	// by hand.
	tokenVar string
}

// String describes the configuration without the token.
func (c Config) String() string {
	tok := "unset"
	if c.Token != "" {
		tok = "set"
	}
	return fmt.Sprintf("upstash.Config{URL: %q, Token: %s}", c.URL, tok)
}

// Format prints String for every verb (%d, %x and %#v included), so no
// format string can print the token.
func (c Config) Format(f fmt.State, verb rune) { fmt.Fprint(f, c.String()) }

// LogValue makes log/slog log String, also with a JSON handler (which would
// otherwise marshal the Token field).
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// validate checks the configuration and returns the normalized base URL.
func (c Config) validate() (string, error) {
	var errs []error
	u, err := checkURL("Config.URL", c.URL, c.AllowInsecureHTTP)
	if err != nil {
		errs = append(errs, err)
	}
	if err := checkToken("Config.Token", c.Token); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return "", fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return u, nil
}

// EnvOption adjusts how ConfigFromEnv reads the environment. The options'
// names start with Env: EnvPrefix, EnvMap, EnvReadOnly.
type EnvOption func(*envSettings)

type envSettings struct {
	environ  map[string]string
	prefix   string
	readOnly bool
}

// EnvMap makes ConfigFromEnv read m instead of the process environment
// (useful in tests and examples). The default, and a nil m, is the process
// environment.
func EnvMap(m map[string]string) EnvOption { return func(s *envSettings) { s.environ = m } }

// EnvPrefix reads the variables with a prefix, as Vercel sets them when the
// integration was connected with a custom prefix: EnvPrefix("cache_") reads
// cache_KV_REST_API_URL and cache_UPSTASH_REDIS_REST_URL. The default is no
// prefix. It concerns variable names only; State's key prefix is
// WithKeyPrefix.
func EnvPrefix(prefix string) EnvOption { return func(s *envSettings) { s.prefix = prefix } }

// EnvReadOnly selects the read-only token, KV_REST_API_READ_ONLY_TOKEN. A
// client built from it can only read; locks and state writes fail with
// NOPERM. The default is the full-access token.
func EnvReadOnly() EnvOption { return func(s *envSettings) { s.readOnly = true } }

type envVars struct {
	URL           string `env:"UPSTASH_REDIS_REST_URL"`
	Token         string `env:"UPSTASH_REDIS_REST_TOKEN"`
	VercelURL     string `env:"KV_REST_API_URL"`
	VercelToken   string `env:"KV_REST_API_TOKEN"`
	VercelROToken string `env:"KV_REST_API_READ_ONLY_TOKEN"`
}

// ConfigFromEnv reads the REST URL from UPSTASH_REDIS_REST_URL, falling back
// to KV_REST_API_URL, and the token from UPSTASH_REDIS_REST_TOKEN, falling
// back to KV_REST_API_TOKEN (or, with EnvReadOnly, from
// KV_REST_API_READ_ONLY_TOKEN). The whitespace around a value is trimmed (a
// pasted trailing newline is common), so an empty or blank variable counts
// as unset; whitespace, control characters or quotes inside a value are
// refused. Every problem is reported at once, naming the variables looked
// at but never their values. The Config remembers which variable the token
// came from, so that a refused token's error names it.
func ConfigFromEnv(opts ...EnvOption) (Config, error) {
	var s envSettings
	for _, o := range opts {
		o(&s)
	}
	environ := s.environ
	if environ == nil {
		environ = environMap()
	}
	var v envVars
	if err := env.ParseWithOptions(&v, env.Options{Environment: environ, Prefix: s.prefix}); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	// Values pasted into a dashboard or piped into `vercel env add` often
	// end with a newline: trim, so that a blank variable counts as unset.
	for _, f := range []*string{&v.URL, &v.Token, &v.VercelURL, &v.VercelToken, &v.VercelROToken} {
		*f = strings.TrimSpace(*f)
	}
	p := s.prefix
	var errs []error
	urlName, rawURL := pick(p+EnvURL, v.URL, p+EnvVercelURL, v.VercelURL)
	if rawURL == "" {
		errs = append(errs, fmt.Errorf("no REST URL: set %s or %s", p+EnvURL, p+EnvVercelURL))
	}
	var tokName, token string
	if s.readOnly {
		tokName, token = p+EnvVercelReadOnlyToken, v.VercelROToken
		if token == "" {
			errs = append(errs, fmt.Errorf("no read-only REST token: set %s", tokName))
		}
	} else {
		tokName, token = pick(p+EnvToken, v.Token, p+EnvVercelToken, v.VercelToken)
		if token == "" {
			errs = append(errs, fmt.Errorf("no REST token: set %s or %s", p+EnvToken, p+EnvVercelToken))
		}
	}
	cfg := Config{Token: token, tokenVar: tokName}
	if rawURL != "" {
		u, err := checkURL(urlName, rawURL, false)
		if err != nil {
			errs = append(errs, err)
		}
		cfg.URL = u
	}
	if token != "" {
		if err := checkToken(tokName, token); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return cfg, nil
}

func pick(name1, v1, name2, v2 string) (string, string) {
	if v1 != "" {
		return name1, v1
	}
	if v2 != "" {
		return name2, v2
	}
	return "", ""
}

func environMap() map[string]string {
	m := make(map[string]string)
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// checkValue applies the rule every URL and token follows: no whitespace,
// control characters or quotes anywhere (ConfigFromEnv has trimmed the
// whitespace around an environment value before). Error texts name the
// setting, never its value.
func checkValue(name, v string) error {
	switch {
	case v == "":
		return fmt.Errorf("%s is empty", name)
	case strings.TrimSpace(v) != v:
		return fmt.Errorf("%s has leading or trailing whitespace", name)
	case strings.IndexFunc(v, unicode.IsSpace) >= 0:
		return fmt.Errorf("%s contains whitespace", name)
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return fmt.Errorf("%s contains a control character", name)
	case strings.ContainsAny(v, `"'`):
		return fmt.Errorf("%s contains quote characters; remove the quotes around the value", name)
	}
	return nil
}

// checkURL validates a REST URL named name and returns it without a
// trailing slash. Error texts name the variable, never its value.
func checkURL(name, raw string, allowHTTP bool) (string, error) {
	if err := checkValue(name, raw); err != nil {
		return "", err
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%s is not a URL", name)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !allowHTTP && !isLoopback(u.Hostname()) {
			return "", fmt.Errorf("%s uses http:// to a host that is not loopback; use https:// (or set Config.AllowInsecureHTTP)", name)
		}
	case "redis", "rediss":
		return "", fmt.Errorf("%s is a Redis TCP URL (%s://); the REST URL starts with https://", name, u.Scheme)
	default:
		return "", fmt.Errorf("%s must start with https://", name)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%s has no host", name)
	}
	if u.User != nil {
		return "", fmt.Errorf("%s must not contain credentials; pass the token separately", name)
	}
	// An empty query or fragment ("https://host/?") parses as none, but
	// the paths the client appends would land after it.
	if u.RawQuery != "" || u.ForceQuery || strings.Contains(raw, "?") {
		return "", fmt.Errorf("%s must not have a query (remove the ? and what follows)", name)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return "", fmt.Errorf("%s must not have a fragment (remove the # and what follows)", name)
	}
	if !utf8.ValidString(raw) {
		return "", fmt.Errorf("%s is not valid UTF-8", name)
	}
	return strings.TrimRight(raw, "/"), nil
}

// checkToken validates a REST token named name: it travels in an HTTP
// header, so only printable ASCII is accepted (Upstash's tokens are
// base64-like). Error texts name the variable, never its value.
func checkToken(name, tok string) error {
	if err := checkValue(name, tok); err != nil {
		return err
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%s contains a byte that is not printable ASCII (a control character, or text that is not a token)", name)
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
