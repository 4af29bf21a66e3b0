package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/config"
)

type testConfig struct {
	Service    string         `koanf:"service" validate:"required"`
	Database   testDatabase   `koanf:"database"`
	HTTPServer testHTTPServer `koanf:"http_server"`
	Tags       []string       `koanf:"tags" validate:"oneof=blue green"`
}

type testDatabase struct {
	DSN             config.DSN    `koanf:"dsn" validate:"required"`
	Password        config.Secret `koanf:"password"`
	MaxOpenConns    int           `koanf:"max_open_conns" validate:"min=1,max=1000"`
	MaxIdleConns    int           `koanf:"max_idle_conns" validate:"min=0"`
	ConnMaxLifetime time.Duration `koanf:"conn_max_lifetime" validate:"min=1s,max=24h"`
	Mode            string        `koanf:"mode" validate:"oneof=primary replica"`
}

// Validate checks the rule no tag can express.
func (d testDatabase) Validate() error {
	if d.MaxIdleConns > d.MaxOpenConns {
		return &config.KeyError{Key: "max_idle_conns", Err: fmt.Errorf("must not exceed max_open_conns (%d)", d.MaxOpenConns)}
	}
	return nil
}

type testHTTPServer struct {
	ListenAddr     string        `koanf:"listen_addr" validate:"required"`
	AllowedOrigins []string      `koanf:"allowed_origins" validate:"required"`
	ReadTimeout    time.Duration `koanf:"read_timeout"`
	Ratio          float64       `koanf:"ratio" validate:"min=0,max=1"`
	Enabled        bool          `koanf:"enabled"`
}

const testDefaults = `
service: authsvc
database:
  dsn: postgres://portcullis:hunter2@db:5432/portcullis?sslmode=disable
  max_open_conns: 25
  max_idle_conns: 5
  conn_max_lifetime: 30m
  mode: primary
http_server:
  listen_addr: ":8080"
  allowed_origins: [https://app.example.com]
  read_timeout: 15s
  ratio: 0.5
`

// env returns a lookup over a fixed environment, so tests never read or
// change the process's.
func env(vars map[string]string) config.Option {
	return config.WithLookupEnv(func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	})
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestLoadLayers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string // content of a config file, if any
		// args and vars may refer to the file as "FILE".
		args  []string
		vars  map[string]string
		check func(t *testing.T, c testConfig)
	}{
		{
			name: "defaults only",
			check: func(t *testing.T, c testConfig) {
				assert.Equal(t, "authsvc", c.Service)
				assert.Equal(t, 25, c.Database.MaxOpenConns)
				assert.Equal(t, 30*time.Minute, c.Database.ConnMaxLifetime)
				assert.Equal(t, 15*time.Second, c.HTTPServer.ReadTimeout)
				assert.Equal(t, []string{"https://app.example.com"}, c.HTTPServer.AllowedOrigins)
				assert.Equal(t, "postgres://portcullis:hunter2@db:5432/portcullis?sslmode=disable", c.Database.DSN.Value())
			},
		},
		{
			name: "file over defaults, other defaults kept",
			file: "database:\n  max_open_conns: 50\n  conn_max_lifetime: 1h30m\n",
			args: []string{"--config", "FILE"},
			check: func(t *testing.T, c testConfig) {
				assert.Equal(t, 50, c.Database.MaxOpenConns)
				assert.Equal(t, 90*time.Minute, c.Database.ConnMaxLifetime)
				assert.Equal(t, 5, c.Database.MaxIdleConns)
				assert.Equal(t, "primary", c.Database.Mode)
			},
		},
		{
			name: "env over file over defaults",
			file: "database:\n  max_open_conns: 50\n  max_idle_conns: 10\n",
			args: []string{"--config=FILE"},
			vars: map[string]string{"PORTCULLIS_DATABASE_MAX_OPEN_CONNS": "75"},
			check: func(t *testing.T, c testConfig) {
				assert.Equal(t, 75, c.Database.MaxOpenConns)
				assert.Equal(t, 10, c.Database.MaxIdleConns)
			},
		},
		{
			name: "underscores in section and key",
			vars: map[string]string{
				"PORTCULLIS_HTTP_SERVER_LISTEN_ADDR":     ":9090",
				"PORTCULLIS_HTTP_SERVER_ALLOWED_ORIGINS": "https://a.example, https://b.example",
				"PORTCULLIS_HTTP_SERVER_READ_TIMEOUT":    "500ms",
				"PORTCULLIS_HTTP_SERVER_RATIO":           "0.25",
				"PORTCULLIS_HTTP_SERVER_ENABLED":         "true",
				"PORTCULLIS_DATABASE_PASSWORD":           "s3cret",
			},
			check: func(t *testing.T, c testConfig) {
				assert.Equal(t, ":9090", c.HTTPServer.ListenAddr)
				assert.Equal(t, []string{"https://a.example", "https://b.example"}, c.HTTPServer.AllowedOrigins)
				assert.Equal(t, 500*time.Millisecond, c.HTTPServer.ReadTimeout)
				assert.InDelta(t, 0.25, c.HTTPServer.Ratio, 1e-9)
				assert.True(t, c.HTTPServer.Enabled)
				assert.Equal(t, "s3cret", c.Database.Password.Value())
			},
		},
		{
			name: "unrelated PORTCULLIS variables are ignored",
			vars: map[string]string{
				"PORTCULLIS_TEST_DATABASE_URL": "postgres://x",
				"PORTCULLIS_ADMIN_EMAIL":       "admin@example.com",
				"PORTCULLIS_DATABASE":          "x",
				"PORTCULLIS_HTTP":              "x",
			},
			check: func(t *testing.T, c testConfig) {
				assert.Equal(t, "authsvc", c.Service)
			},
		},
		{
			name: "PORTCULLIS_CONFIG names the file",
			file: "service: from-env-file\n",
			vars: map[string]string{"PORTCULLIS_CONFIG": "FILE"},
			check: func(t *testing.T, c testConfig) {
				assert.Equal(t, "from-env-file", c.Service)
			},
		},
		{
			name: "--config beats PORTCULLIS_CONFIG",
			file: "service: from-flag\n",
			args: []string{"-v", "-config", "FILE"},
			vars: map[string]string{"PORTCULLIS_CONFIG": "/does/not/exist.yaml"},
			check: func(t *testing.T, c testConfig) {
				assert.Equal(t, "from-flag", c.Service)
			},
		},
		{
			name: "arguments after -- are not flags",
			args: []string{"--", "--config", "/does/not/exist.yaml"},
			check: func(t *testing.T, c testConfig) {
				assert.Equal(t, "authsvc", c.Service)
			},
		},
		{
			name: "null in a file keeps the earlier value",
			file: "database:\n  max_open_conns:\nhttp_server:\n",
			args: []string{"--config", "FILE"},
			check: func(t *testing.T, c testConfig) {
				assert.Equal(t, 25, c.Database.MaxOpenConns)
				assert.Equal(t, ":8080", c.HTTPServer.ListenAddr)
			},
		},
		{
			name: "an empty list from env clears the list",
			file: "tags: [blue]\n",
			args: []string{"--config", "FILE"},
			vars: map[string]string{"PORTCULLIS_TAGS": "green,blue"},
			check: func(t *testing.T, c testConfig) {
				assert.Equal(t, []string{"green", "blue"}, c.Tags)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			args := replaceFile(tt.args, path)
			vars := map[string]string{}
			for k, v := range tt.vars {
				vars[k] = replaceFile([]string{v}, path)[0]
			}
			cfg, err := config.Load[testConfig]([]byte(testDefaults), config.WithArgs(args), env(vars))
			require.NoError(t, err)
			tt.check(t, cfg)
		})
	}
}

func replaceFile(in []string, path string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		switch s {
		case "FILE":
			s = path
		case "--config=FILE":
			s = "--config=" + path
		}
		out[i] = s
	}
	return out
}

func TestLoadWithFileBeatsFlag(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "service: from-option\n")
	cfg, err := config.Load[testConfig]([]byte(testDefaults),
		config.WithFile(path),
		config.WithArgs([]string{"--config", "/does/not/exist.yaml"}),
		env(nil))
	require.NoError(t, err)
	assert.Equal(t, "from-option", cfg.Service)
}

// keyErrors returns the KeyErrors joined in err.
func keyErrors(t *testing.T, err error) []*config.KeyError {
	t.Helper()
	require.Error(t, err)
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var out []*config.KeyError
	for _, e := range errs {
		var ke *config.KeyError
		require.ErrorAs(t, e, &ke)
		out = append(out, ke)
	}
	return out
}

func TestLoadErrorsNameKeyAndSource(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		defaults string // appended to testDefaults
		file     string
		vars     map[string]string
		key      string
		source   string // "FILE" stands for "file <path>"
		message  string
	}{
		{
			name:     "unknown key in defaults",
			defaults: "databse:\n  max_open_conns: 1\n",
			key:      "databse", source: "defaults", message: "unknown key",
		},
		{
			name: "unknown key in file",
			file: "database:\n  max_open_con: 10\n",
			key:  "database.max_open_con", source: "FILE", message: "unknown key",
		},
		{
			name: "malformed duration from env",
			vars: map[string]string{"PORTCULLIS_DATABASE_CONN_MAX_LIFETIME": "abc"},
			key:  "database.conn_max_lifetime", source: "env PORTCULLIS_DATABASE_CONN_MAX_LIFETIME",
			message: `invalid duration "abc"`,
		},
		{
			name: "duration without unit in file",
			file: "http_server:\n  read_timeout: 30\n",
			key:  "http_server.read_timeout", source: "FILE", message: "has no unit",
		},
		{
			name: "number above max from env",
			vars: map[string]string{"PORTCULLIS_DATABASE_MAX_OPEN_CONNS": "5000"},
			key:  "database.max_open_conns", source: "env PORTCULLIS_DATABASE_MAX_OPEN_CONNS",
			message: "must be at most 1000, got 5000",
		},
		{
			name: "number below min in file",
			file: "database:\n  max_open_conns: 0\n",
			key:  "database.max_open_conns", source: "FILE", message: "must be at least 1, got 0",
		},
		{
			name: "duration below min",
			file: "database:\n  conn_max_lifetime: 10ms\n",
			key:  "database.conn_max_lifetime", source: "FILE", message: "must be at least 1s, got 10ms",
		},
		{
			name: "float above max",
			vars: map[string]string{"PORTCULLIS_HTTP_SERVER_RATIO": "1.5"},
			key:  "http_server.ratio", source: "env PORTCULLIS_HTTP_SERVER_RATIO", message: "must be at most 1, got 1.5",
		},
		{
			name: "not an integer from env",
			vars: map[string]string{"PORTCULLIS_DATABASE_MAX_OPEN_CONNS": "many"},
			key:  "database.max_open_conns", source: "env PORTCULLIS_DATABASE_MAX_OPEN_CONNS",
			message: `expected an integer, got "many"`,
		},
		{
			name: "fraction for an integer",
			file: "database:\n  max_open_conns: 2.5\n",
			key:  "database.max_open_conns", source: "FILE", message: "expected an integer",
		},
		{
			name: "list for an integer",
			file: "database:\n  max_open_conns: [1, 2]\n",
			key:  "database.max_open_conns", source: "FILE", message: "expected an integer, got a list",
		},
		{
			name: "value where a section belongs",
			file: "database: 5\n",
			key:  "database", source: "FILE", message: "is a section",
		},
		{
			name: "required value set empty",
			vars: map[string]string{"PORTCULLIS_SERVICE": " "},
			key:  "service", source: "env PORTCULLIS_SERVICE", message: "a value is required",
		},
		{
			name:     "required value never set",
			defaults: "", // testDefaults has no database.password; use listen_addr below
			file:     "",
			vars:     map[string]string{"PORTCULLIS_DATABASE_DSN": ""},
			key:      "database.dsn", source: "env PORTCULLIS_DATABASE_DSN", message: "a value is required",
		},
		{
			name: "empty element in a required list",
			file: "http_server:\n  allowed_origins: [https://a.example, \"\"]\n",
			key:  "http_server.allowed_origins[1]", source: "FILE", message: "must not be empty",
		},
		{
			name: "bad enum value",
			vars: map[string]string{"PORTCULLIS_DATABASE_MODE": "leader"},
			key:  "database.mode", source: "env PORTCULLIS_DATABASE_MODE",
			message: `must be one of primary, replica, got "leader"`,
		},
		{
			name: "bad enum element",
			file: "tags: [blue, red]\n",
			key:  "tags[1]", source: "FILE", message: `must be one of blue, green, got "red"`,
		},
		{
			name: "bad boolean from env",
			vars: map[string]string{"PORTCULLIS_HTTP_SERVER_ENABLED": "maybe"},
			key:  "http_server.enabled", source: "env PORTCULLIS_HTTP_SERVER_ENABLED", message: "expected true or false",
		},
		{
			name: "cross-field rule from Validate",
			file: "database:\n  max_idle_conns: 30\n",
			key:  "database.max_idle_conns", source: "FILE", message: "must not exceed max_open_conns (25)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var opts []config.Option
			source := tt.source
			if tt.file != "" {
				path := writeFile(t, tt.file)
				opts = append(opts, config.WithFile(path))
				if source == "FILE" {
					source = "file " + path
				}
			}
			opts = append(opts, config.WithArgs(nil), env(tt.vars))
			_, err := config.Load[testConfig]([]byte(testDefaults+tt.defaults), opts...)
			errs := keyErrors(t, err)
			require.Len(t, errs, 1, "errors: %v", err)
			assert.Equal(t, tt.key, errs[0].Key)
			assert.Equal(t, source, errs[0].Source)
			assert.ErrorContains(t, errs[0], tt.message)
			assert.Contains(t, err.Error(), tt.key)
			if source != "" {
				assert.Contains(t, err.Error(), source)
			}
		})
	}
}

func TestLoadMissingRequiredSaysHowToSetIt(t *testing.T) {
	t.Parallel()
	_, err := config.Load[testConfig](nil, config.WithArgs(nil), env(nil))
	errs := keyErrors(t, err)
	keys := make([]string, 0, len(errs))
	for _, e := range errs {
		keys = append(keys, e.Key)
	}
	assert.Equal(t, []string{
		"service", "database.dsn", "database.max_open_conns", "database.conn_max_lifetime",
		"database.mode", "http_server.listen_addr", "http_server.allowed_origins",
	}, keys)
	assert.Empty(t, errs[0].Source)
	assert.EqualError(t, errs[0], "config: service: a value is required but not set; set it in a config file or with PORTCULLIS_SERVICE")
}

func TestLoadReportsEveryProblem(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "database:\n  conn_max_lifetime: abc\n  mode: leader\nunknown: 1\n")
	_, err := config.Load[testConfig]([]byte(testDefaults),
		config.WithFile(path), config.WithArgs(nil),
		env(map[string]string{"PORTCULLIS_DATABASE_MAX_OPEN_CONNS": "0"}))
	errs := keyErrors(t, err)
	keys := make(map[string]string)
	for _, e := range errs {
		keys[e.Key] = e.Source
	}
	assert.Equal(t, map[string]string{
		"unknown":                    "file " + path,
		"database.conn_max_lifetime": "file " + path,
		"database.mode":              "file " + path,
		"database.max_open_conns":    "env PORTCULLIS_DATABASE_MAX_OPEN_CONNS",
	}, keys)
}

func TestLoadFailsAlone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		defaults string
		args     []string
		message  string
	}{
		{name: "flag without path", args: []string{"--config"}, message: "--config needs a file path"},
		{name: "flag with empty path", args: []string{"--config="}, message: "--config needs a file path"},
		{name: "missing file", args: []string{"--config", "/does/not/exist.yaml"}, message: "/does/not/exist.yaml"},
		{name: "bad defaults", defaults: "service: [", message: "parse defaults"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load[testConfig]([]byte(tt.defaults), config.WithArgs(tt.args), env(nil))
			assert.ErrorContains(t, err, tt.message)
		})
	}
}

func TestLoadRejectsBadTypes(t *testing.T) {
	t.Parallel()
	_, err := config.Load[int](nil, config.WithArgs(nil), env(nil))
	assert.ErrorContains(t, err, "needs a struct")

	type clash struct {
		A struct {
			BC string `koanf:"b_c"`
		} `koanf:"a"`
		AB struct {
			C string `koanf:"c"`
		} `koanf:"a_b"`
	}
	_, err = config.Load[clash](nil, config.WithArgs(nil), env(nil))
	assert.ErrorContains(t, err, "PORTCULLIS_A_B_C")

	type badTag struct {
		N int `koanf:"n" validate:"min=x"`
	}
	_, err = config.Load[badTag]([]byte("n: 1"), config.WithArgs(nil), env(nil))
	assert.ErrorContains(t, err, "invalid validate tag")
}

func TestLoadNestedLists(t *testing.T) {
	t.Parallel()
	type upstream struct {
		Host    string        `koanf:"host" validate:"required"`
		Timeout time.Duration `koanf:"timeout"`
	}
	type cfg struct {
		Upstreams []upstream        `koanf:"upstreams"`
		Labels    map[string]string `koanf:"labels"`
	}
	defaults := "upstreams:\n  - host: a\n    timeout: 1s\n  - host: \"\"\n    timeout: 2s\n  - host: c\n    timout: 3s\nlabels:\n  team: iam\n"
	_, err := config.Load[cfg]([]byte(defaults), config.WithArgs(nil), env(nil))
	errs := keyErrors(t, err)
	require.Len(t, errs, 1, "%v", err)
	assert.Equal(t, "upstreams[2]", errs[0].Key)
	assert.ErrorContains(t, errs[0], "timout")

	c, err := config.Load[cfg]([]byte(defaults[:len("upstreams:\n  - host: a\n    timeout: 1s\n")]+"labels:\n  team: iam\n"),
		config.WithArgs(nil), env(nil))
	require.NoError(t, err)
	assert.Equal(t, []upstream{{Host: "a", Timeout: time.Second}}, c.Upstreams)
	assert.Equal(t, map[string]string{"team": "iam"}, c.Labels)

	_, err = config.Load[cfg]([]byte("upstreams:\n  - host: \"\"\n"), config.WithArgs(nil), env(nil))
	errs = keyErrors(t, err)
	require.Len(t, errs, 1)
	assert.Equal(t, "upstreams[0].host", errs[0].Key)
	assert.Equal(t, "defaults", errs[0].Source)
}

func TestLoadOtherTypes(t *testing.T) {
	t.Parallel()
	type cfg struct {
		Level    slog.Level `koanf:"level"`
		Port     uint16     `koanf:"port" validate:"required"`
		Optional *int       `koanf:"optional"`
		Deadline *int       `koanf:"deadline" validate:"required"`
	}
	tests := []struct {
		name    string
		vars    map[string]string
		check   func(t *testing.T, c cfg)
		key     string
		message string
	}{
		{
			name: "values",
			vars: map[string]string{"PORTCULLIS_LEVEL": "WARN", "PORTCULLIS_PORT": "8080", "PORTCULLIS_OPTIONAL": "0"},
			check: func(t *testing.T, c cfg) {
				assert.Equal(t, slog.LevelWarn, c.Level)
				assert.Equal(t, uint16(8080), c.Port)
				require.NotNil(t, c.Optional)
				assert.Equal(t, 0, *c.Optional)
				require.NotNil(t, c.Deadline)
			},
		},
		{name: "text unmarshaler fails", vars: map[string]string{"PORTCULLIS_LEVEL": "loud"}, key: "level", message: "loud"},
		{name: "out of range", vars: map[string]string{"PORTCULLIS_PORT": "70000"}, key: "port", message: "70000 is out of range for uint16"},
		{name: "negative", vars: map[string]string{"PORTCULLIS_PORT": "-1"}, key: "port", message: "expected a non-negative integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := config.Load[cfg]([]byte("port: 1\ndeadline: 5\n"), config.WithArgs(nil), env(tt.vars))
			if tt.check != nil {
				require.NoError(t, err)
				tt.check(t, c)
				return
			}
			errs := keyErrors(t, err)
			require.Len(t, errs, 1, "%v", err)
			assert.Equal(t, tt.key, errs[0].Key)
			assert.ErrorContains(t, errs[0], tt.message)
		})
	}

	_, err := config.Load[cfg]([]byte("port: 1\n"), config.WithArgs(nil), env(nil))
	errs := keyErrors(t, err)
	require.Len(t, errs, 1)
	assert.Equal(t, "deadline", errs[0].Key)
}

func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load[testConfig]([]byte(testDefaults), config.WithArgs(nil),
		env(map[string]string{"PORTCULLIS_DATABASE_PASSWORD": "s3cret-pw"}))
	require.NoError(t, err)
	require.Equal(t, "s3cret-pw", cfg.Database.Password.Value())
	require.Contains(t, cfg.Database.DSN.Value(), "hunter2")

	slogJSON := func(v any) string {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", v, "dsn", cfg.Database.DSN, "password", cfg.Database.Password)
		return buf.String()
	}
	slogText := func(v any) string {
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", v, "dsn", cfg.Database.DSN, "password", cfg.Database.Password)
		return buf.String()
	}
	tests := []struct {
		name   string
		output func() string
	}{
		{"fmt verbs", func() string {
			var out string
			// Every verb, on the struct, a pointer to it and the fields alone.
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
				out += fmt.Sprintf(verb+" "+verb+" "+verb+" "+verb+"\n", cfg, &cfg, cfg.Database.Password, cfg.Database.DSN)
			}
			return out
		}},
		{"Println", func() string { return fmt.Sprintln(cfg.Database.Password, cfg.Database.DSN) }},
		{"json", func() string { b, err := json.Marshal(cfg); require.NoError(t, err); return string(b) }},
		{"slog JSON", func() string { return slogJSON(cfg) }},
		{"slog text", func() string { return slogText(cfg) }},
		{"Print", func() string {
			var buf bytes.Buffer
			require.NoError(t, config.Print(&buf, cfg))
			return buf.String()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := tt.output()
			assert.NotContains(t, out, "s3cret-pw")
			assert.NotContains(t, out, "hunter2")
			assert.NotContains(t, out, fmt.Sprintf("%x", "hunter2"))
			assert.NotContains(t, out, fmt.Sprintf("%x", "s3cret-pw"))
		})
	}
}

func TestSecretForms(t *testing.T) {
	t.Parallel()
	s := config.Secret("pw")
	assert.Equal(t, "[REDACTED]", s.String())
	assert.Equal(t, `config.Secret("[REDACTED]")`, fmt.Sprintf("%#v", s))
	b, err := json.Marshal(s)
	require.NoError(t, err)
	assert.JSONEq(t, `"[REDACTED]"`, string(b))
	assert.Equal(t, "[REDACTED]", s.LogValue().String())
	assert.Equal(t, "pw", s.Value())

	var empty config.Secret
	assert.Empty(t, empty.String(), "an unset secret shows it is unset")

	d := config.DSN("postgres://u:pw@h/db")
	assert.Equal(t, `config.DSN("postgres://u:[REDACTED]@h/db")`, fmt.Sprintf("%#v", d))
	assert.Equal(t, "postgres://u:pw@h/db", d.Value())
}

func TestDSNString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{
			"postgres://portcullis:hunter2@db:5432/portcullis?sslmode=disable",
			"postgres://portcullis:[REDACTED]@db:5432/portcullis?sslmode=disable",
		},
		{"postgres://portcullis@db/portcullis", "postgres://portcullis@db/portcullis"},
		{"postgres://db:5432/portcullis", "postgres://db:5432/portcullis"},
		{"postgres://u:p%40ss@db/x", "postgres://u:[REDACTED]@db/x"},
		{"postgres://u:pa/ss@db/x", "postgres://u:[REDACTED]@db/x"},
		{"postgres://u:p@ss@db/x", "postgres://u:[REDACTED]@db/x"},
		{"postgres://u:pw@h1:5432,h2:5432/x?target_session_attrs=read-write", "postgres://u:[REDACTED]@h1:5432,h2:5432/x?target_session_attrs=read-write"},
		{"postgres://db/x?user=u&password=pw&sslmode=require", "postgres://db/x?user=u&password=[REDACTED]&sslmode=require"},
		{"postgresql://u:@db/x", "postgresql://u:@db/x"},
		{"host=db user=portcullis password=hunter2 dbname=portcullis sslmode=disable", "host=db user=portcullis password=[REDACTED] dbname=portcullis sslmode=disable"},
		{"host=db password = 'hun ter\\'2' dbname=x", "host=db password = [REDACTED] dbname=x"},
		{"host=db sslpassword=pw", "host=db sslpassword=[REDACTED]"},
		{"host=db password='unterminated", "[REDACTED]"},
		{"user:pw@tcp(db:3306)/x?parseTime=true", "user:[REDACTED]@tcp(db:3306)/x?parseTime=true"},
		{"/var/lib/portcullis.db", "/var/lib/portcullis.db"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, config.DSN(tt.in).String())
		})
	}
}

func TestPrint(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load[testConfig]([]byte(testDefaults), config.WithArgs(nil),
		env(map[string]string{"PORTCULLIS_DATABASE_PASSWORD": "pw"}))
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, config.Print(&buf, &cfg))
	assert.Equal(t, `service: authsvc
database:
  dsn: postgres://portcullis:[REDACTED]@db:5432/portcullis?sslmode=disable
  password: '[REDACTED]'
  max_open_conns: 25
  max_idle_conns: 5
  conn_max_lifetime: 30m0s
  mode: primary
http_server:
  listen_addr: :8080
  allowed_origins:
    - https://app.example.com
  read_timeout: 15s
  ratio: 0.5
  enabled: false
tags: []
`, buf.String())

	// What Print writes loads back as the same configuration, secrets aside.
	cfg.Database.DSN = "postgres://portcullis:[REDACTED]@db:5432/portcullis?sslmode=disable"
	cfg.Database.Password = "[REDACTED]"
	again, err := config.Load[testConfig](buf.Bytes(), config.WithArgs(nil), env(nil))
	require.NoError(t, err)
	cfg.Tags = []string{}
	assert.Equal(t, cfg, again)

	assert.Error(t, config.Print(&buf, 42))
}

func TestPrintRequested(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--print-config"}, true},
		{[]string{"-print-config"}, true},
		{[]string{"--config", "x.yaml", "--print-config=true"}, true},
		{[]string{"--print-config=false"}, false},
		{[]string{"--print-config=maybe"}, false},
		{[]string{"--", "--print-config"}, false},
		{[]string{"print-config"}, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.args), func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, config.PrintRequested(tt.args))
		})
	}
}

func TestKeyErrorMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  *config.KeyError
		want string
	}{
		{&config.KeyError{Key: "a.b", Source: "defaults", Err: errors.New("bad")}, "config: a.b (defaults): bad"},
		{&config.KeyError{Key: "a.b", Err: errors.New("bad")}, "config: a.b: bad"},
		{&config.KeyError{Err: errors.New("bad")}, "config: bad"},
	}
	for _, tt := range tests {
		assert.EqualError(t, tt.err, tt.want)
	}
}
