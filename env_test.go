package upstash_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/chatstate/upstash"
)

// Distinctive values: error texts must never contain them.
const (
	envHost  = "https://eu2-secret-host-7781.upstash.io"
	envTok   = "AYsecretTOKENenv01"
	envTokKV = "AYsecretTOKENkv02"
	envTokRO = "AYsecretTOKENro03"
)

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		opts    []upstash.EnvOption
		wantURL string
		wantTok string
	}{
		{"primary names", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost, "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, envHost, envTok},
		{"Vercel names", map[string]string{
			"KV_REST_API_URL": envHost, "KV_REST_API_TOKEN": envTokKV,
		}, nil, envHost, envTokKV},
		{"primary wins over Vercel", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost, "UPSTASH_REDIS_REST_TOKEN": envTok,
			"KV_REST_API_URL": "https://other.upstash.io", "KV_REST_API_TOKEN": envTokKV,
		}, nil, envHost, envTok},
		{"mixed", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost, "KV_REST_API_TOKEN": envTokKV,
		}, nil, envHost, envTokKV},
		{"empty primary falls back", map[string]string{
			"UPSTASH_REDIS_REST_URL": "", "UPSTASH_REDIS_REST_TOKEN": "",
			"KV_REST_API_URL": envHost, "KV_REST_API_TOKEN": envTokKV,
		}, nil, envHost, envTokKV},
		{"blank primary falls back", map[string]string{
			"UPSTASH_REDIS_REST_URL": "  ", "UPSTASH_REDIS_REST_TOKEN": "\n",
			"KV_REST_API_URL": envHost, "KV_REST_API_TOKEN": envTokKV,
		}, nil, envHost, envTokKV},
		{"prefix", map[string]string{
			"cache_KV_REST_API_URL": envHost, "cache_KV_REST_API_TOKEN": envTokKV,
			"KV_REST_API_URL": "https://unprefixed.upstash.io", "KV_REST_API_TOKEN": "unprefixed",
		}, []upstash.EnvOption{upstash.EnvPrefix("cache_")}, envHost, envTokKV},
		{"prefix, primary names", map[string]string{
			"MY_UPSTASH_REDIS_REST_URL": envHost, "MY_UPSTASH_REDIS_REST_TOKEN": envTok,
		}, []upstash.EnvOption{upstash.EnvPrefix("MY_")}, envHost, envTok},
		{"read-only", map[string]string{
			"KV_REST_API_URL": envHost, "KV_REST_API_TOKEN": envTokKV, "KV_REST_API_READ_ONLY_TOKEN": envTokRO,
			"UPSTASH_REDIS_REST_TOKEN": envTok,
		}, []upstash.EnvOption{upstash.EnvReadOnly()}, envHost, envTokRO},
		{"read-only with prefix", map[string]string{
			"p_KV_REST_API_URL": envHost, "p_KV_REST_API_READ_ONLY_TOKEN": envTokRO,
		}, []upstash.EnvOption{upstash.EnvReadOnly(), upstash.EnvPrefix("p_")}, envHost, envTokRO},
		{"trailing slash trimmed", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost + "/", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, envHost, envTok},
		{"several trailing slashes trimmed", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost + "///", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, envHost, envTok},
		{"surrounding whitespace trimmed", map[string]string{
			"UPSTASH_REDIS_REST_URL": " " + envHost + "\n", "UPSTASH_REDIS_REST_TOKEN": envTok + "\r\n",
		}, nil, envHost, envTok},
		{"http to 127.0.0.1", map[string]string{
			"UPSTASH_REDIS_REST_URL": "http://127.0.0.1:8079", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, "http://127.0.0.1:8079", envTok},
		{"http to localhost", map[string]string{
			"UPSTASH_REDIS_REST_URL": "http://localhost:8079/", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, "http://localhost:8079", envTok},
		{"http to ::1", map[string]string{
			"UPSTASH_REDIS_REST_URL": "http://[::1]:8079", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, "http://[::1]:8079", envTok},
		{"port and path", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost + ":443/v2", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, envHost + ":443/v2", envTok},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := upstash.ConfigFromEnv(append([]upstash.EnvOption{upstash.EnvMap(tc.env)}, tc.opts...)...)
			if err != nil {
				t.Fatalf("ConfigFromEnv: %v", err)
			}
			if cfg.URL != tc.wantURL || cfg.Token != tc.wantTok {
				t.Fatalf("got URL %q token %q, want %q and %q", cfg.URL, cfg.Token, tc.wantURL, tc.wantTok)
			}
			if _, err := upstash.New(cfg); err != nil {
				t.Fatalf("New refuses the config ConfigFromEnv returned: %v", err)
			}
		})
	}
}

func TestConfigFromEnvErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		opts []upstash.EnvOption
		want []string // substrings of the error text
	}{
		{"nothing set", map[string]string{}, nil,
			[]string{"UPSTASH_REDIS_REST_URL", "KV_REST_API_URL", "UPSTASH_REDIS_REST_TOKEN", "KV_REST_API_TOKEN"}},
		{"URL missing", map[string]string{"UPSTASH_REDIS_REST_TOKEN": envTok}, nil,
			[]string{"UPSTASH_REDIS_REST_URL", "KV_REST_API_URL"}},
		{"token missing", map[string]string{"KV_REST_API_URL": envHost}, nil,
			[]string{"UPSTASH_REDIS_REST_TOKEN", "KV_REST_API_TOKEN"}},
		{"only blanks", map[string]string{"UPSTASH_REDIS_REST_URL": " \t", "UPSTASH_REDIS_REST_TOKEN": "\n"}, nil,
			[]string{"no REST URL", "no REST token"}},
		{"prefix missing", map[string]string{"KV_REST_API_URL": envHost, "KV_REST_API_TOKEN": envTokKV},
			[]upstash.EnvOption{upstash.EnvPrefix("cache_")},
			[]string{"cache_UPSTASH_REDIS_REST_URL", "cache_KV_REST_API_URL", "cache_KV_REST_API_TOKEN"}},
		{"read-only token missing", map[string]string{"KV_REST_API_URL": envHost, "KV_REST_API_TOKEN": envTokKV},
			[]upstash.EnvOption{upstash.EnvReadOnly()}, []string{"KV_REST_API_READ_ONLY_TOKEN"}},
		{"rediss URL", map[string]string{
			"UPSTASH_REDIS_REST_URL": "rediss://default:" + envTok + "@eu2-secret-host-7781.upstash.io:6379", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"UPSTASH_REDIS_REST_URL", "rediss://", "https://"}},
		{"redis URL in the Vercel variable", map[string]string{
			"KV_REST_API_URL": "redis://eu2-secret-host-7781.upstash.io:6379", "KV_REST_API_TOKEN": envTokKV,
		}, nil, []string{"KV_REST_API_URL", "redis://"}},
		{"http to a remote host", map[string]string{
			"UPSTASH_REDIS_REST_URL": "http://eu2-secret-host-7781.upstash.io", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"UPSTASH_REDIS_REST_URL", "http://", "loopback"}},
		{"http to a private address", map[string]string{
			"UPSTASH_REDIS_REST_URL": "http://10.1.2.3:8079", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"loopback"}},
		{"no scheme", map[string]string{
			"UPSTASH_REDIS_REST_URL": "eu2-secret-host-7781.upstash.io", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"UPSTASH_REDIS_REST_URL", "https://"}},
		{"no host", map[string]string{
			"UPSTASH_REDIS_REST_URL": "https:///path-secret-host-7781", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"no host"}},
		{"not a URL", map[string]string{
			"UPSTASH_REDIS_REST_URL": "https://eu2-secret-host-7781.upstash.io:port%zz", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"UPSTASH_REDIS_REST_URL"}},
		{"query", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost + "?_token=" + envTok, "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"query"}},
		{"fragment", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost + "#" + envTok, "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"fragment"}},
		{"userinfo", map[string]string{
			"UPSTASH_REDIS_REST_URL": "https://default:" + envTok + "@eu2-secret-host-7781.upstash.io", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"credentials"}},
		{"quoted URL", map[string]string{
			"UPSTASH_REDIS_REST_URL": `"` + envHost + `"`, "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"UPSTASH_REDIS_REST_URL", "quote"}},
		{"quoted token", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost, "KV_REST_API_TOKEN": "'" + envTokKV + "'",
		}, nil, []string{"KV_REST_API_TOKEN", "quote"}},
		{"space inside the token", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost, "UPSTASH_REDIS_REST_TOKEN": "AYsecret TOKENenv01",
		}, nil, []string{"UPSTASH_REDIS_REST_TOKEN", "whitespace"}},
		{"control character inside the token", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost, "UPSTASH_REDIS_REST_TOKEN": "AYsecret\x00TOKENenv01",
		}, nil, []string{"UPSTASH_REDIS_REST_TOKEN", "control character"}},
		{"empty query", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost + "/?", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"UPSTASH_REDIS_REST_URL", "query"}},
		{"empty query after the host", map[string]string{
			"KV_REST_API_URL": envHost + "?", "KV_REST_API_TOKEN": envTokKV,
		}, nil, []string{"KV_REST_API_URL", "query"}},
		{"empty fragment", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost + "#", "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"UPSTASH_REDIS_REST_URL", "fragment"}},
		{"C1 control byte inside the token", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost, "UPSTASH_REDIS_REST_TOKEN": "AYsecret\x85TOKENenv01",
		}, nil, []string{"UPSTASH_REDIS_REST_TOKEN", "control character"}},
		{"DEL inside the token", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost, "KV_REST_API_TOKEN": "AYsecret\x7fTOKENenv01",
		}, nil, []string{"KV_REST_API_TOKEN", "control character"}},
		{"invalid UTF-8 inside the token", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost, "UPSTASH_REDIS_REST_TOKEN": "AYsecret\xffTOKENenv01",
		}, nil, []string{"UPSTASH_REDIS_REST_TOKEN", "not printable ASCII"}},
		{"newline inside the URL", map[string]string{
			"UPSTASH_REDIS_REST_URL": envHost + "\n" + envHost, "UPSTASH_REDIS_REST_TOKEN": envTok,
		}, nil, []string{"UPSTASH_REDIS_REST_URL", "whitespace"}},
		{"every problem at once", map[string]string{
			"UPSTASH_REDIS_REST_URL": "rediss://eu2-secret-host-7781.upstash.io", "UPSTASH_REDIS_REST_TOKEN": `"` + envTok + `"`,
		}, nil, []string{"UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := upstash.ConfigFromEnv(append([]upstash.EnvOption{upstash.EnvMap(tc.env)}, tc.opts...)...)
			if err == nil {
				t.Fatalf("no error; got %v", cfg)
			}
			if !errors.Is(err, upstash.ErrConfig) {
				t.Errorf("error %q does not match ErrConfig", err)
			}
			if cfg != (upstash.Config{}) {
				t.Errorf("config %v returned with an error", cfg)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			for _, secret := range []string{envTok, envTokKV, envTokRO, "secret-host", "secret"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q contains the value %q", msg, secret)
				}
			}
		})
	}
}

func TestConfigFromProcessEnv(t *testing.T) {
	// Not parallel: t.Setenv.
	for _, k := range []string{"UPSTASH_REDIS_REST_URL", "UPSTASH_REDIS_REST_TOKEN", "KV_REST_API_URL", "KV_REST_API_TOKEN", "KV_REST_API_READ_ONLY_TOKEN"} {
		t.Setenv(k, "")
	}
	if _, err := upstash.ConfigFromEnv(); !errors.Is(err, upstash.ErrConfig) {
		t.Fatalf("empty environment: %v", err)
	}
	t.Setenv("KV_REST_API_URL", envHost)
	t.Setenv("KV_REST_API_TOKEN", envTokKV)
	cfg, err := upstash.ConfigFromEnv()
	if err != nil || cfg.URL != envHost || cfg.Token != envTokKV {
		t.Fatalf("got %+v, %v", cfg, err)
	}
	// EnvMap ignores the process environment.
	if _, err := upstash.ConfigFromEnv(upstash.EnvMap(map[string]string{})); !errors.Is(err, upstash.ErrConfig) {
		t.Fatalf("EnvMap of an empty map: %v", err)
	}
}

// TestConfigByHandIsChecked: New applies the same rules to a Config built
// by hand, naming its fields.
func TestConfigByHandIsChecked(t *testing.T) {
	for _, tc := range []struct {
		cfg  upstash.Config
		want string
	}{
		{upstash.Config{URL: envHost + "/?", Token: envTok}, "Config.URL must not have a query"},
		{upstash.Config{URL: envHost + "?", Token: envTok}, "Config.URL must not have a query"},
		{upstash.Config{URL: envHost + "/v2?", Token: envTok}, "Config.URL must not have a query"},
		{upstash.Config{URL: envHost + "#", Token: envTok}, "Config.URL must not have a fragment"},
		{upstash.Config{URL: envHost + "/#", Token: envTok}, "Config.URL must not have a fragment"},
		{upstash.Config{URL: envHost + "/\xff", Token: envTok}, "Config.URL is not valid UTF-8"},
		{upstash.Config{URL: envHost, Token: envTok + "\x00"}, "Config.Token contains a control character"},
		{upstash.Config{URL: envHost, Token: envTok + "\x85"}, "Config.Token contains a byte that is not printable ASCII"},
		{upstash.Config{URL: envHost, Token: envTok + "é"}, "Config.Token contains a byte that is not printable ASCII"},
		{upstash.Config{URL: envHost}, "Config.Token is empty"},
		{upstash.Config{Token: envTok}, "Config.URL is empty"},
	} {
		_, err := upstash.New(tc.cfg)
		if !errors.Is(err, upstash.ErrConfig) {
			t.Errorf("%q: error %v does not match ErrConfig", tc.cfg.URL, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %q does not say %q", err, tc.want)
		}
		if strings.Contains(err.Error(), envTok) || strings.Contains(err.Error(), "secret-host") {
			t.Errorf("error %q shows a value", err)
		}
	}
}

func TestConfigString(t *testing.T) {
	cfg := upstash.Config{URL: envHost, Token: envTok}
	if got, want := cfg.String(), `upstash.Config{URL: "`+envHost+`", Token: set}`; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	if got := (upstash.Config{}).String(); !strings.Contains(got, "Token: unset") {
		t.Errorf("String() of the zero Config = %s", got)
	}
}
