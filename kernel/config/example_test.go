package config_test

import (
	"fmt"
	"os"
	"time"

	"portcullis.dev/kernel/config"
	"portcullis.dev/kernel/logging"
)

// Config is what a service's config/default.yaml describes.
type Config struct {
	Database struct {
		DSN          config.DSN    `koanf:"dsn" validate:"required"`
		MaxOpenConns int           `koanf:"max_open_conns" validate:"min=1,max=1000"`
		ConnLifetime time.Duration `koanf:"conn_lifetime" validate:"min=1s"`
	} `koanf:"database"`
	Logging logging.Config `koanf:"logging"`
}

// In a service the defaults are embedded:
//
//	//go:embed config/default.yaml
//	var defaults []byte
var defaults = []byte(`
database:
  dsn: postgres://authsvc@localhost:5432/portcullis?sslmode=disable
  max_open_conns: 25   # per replica
  conn_lifetime: 30m
logging:
  level: info
  format: auto
`)

func ExampleLoad() {
	// A service passes no options: the arguments are os.Args[1:] and the
	// environment is the process's. Here both are spelled out.
	args := []string{"--print-config"}
	environ := map[string]string{
		"PORTCULLIS_DATABASE_DSN":            "postgres://authsvc:s3cret@db:5432/portcullis?sslmode=disable",
		"PORTCULLIS_DATABASE_MAX_OPEN_CONNS": "50",
	}
	cfg, err := config.Load[Config](defaults,
		config.WithArgs(args),
		config.WithLookupEnv(func(k string) (string, bool) { v, ok := environ[k]; return v, ok }))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if config.PrintRequested(args) {
		if err := config.Print(os.Stdout, cfg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	// Output:
	// database:
	//   dsn: postgres://authsvc:[REDACTED]@db:5432/portcullis?sslmode=disable
	//   max_open_conns: 50
	//   conn_lifetime: 30m0s
	// logging:
	//   level: info
	//   format: auto
	//   flush_interval: 0s
}

func ExampleLoad_errors() {
	environ := map[string]string{
		"PORTCULLIS_DATABASE_MAX_OPEN_CONNS": "5000",
		"PORTCULLIS_DATABASE_CONN_LIFETIME":  "forever",
		"PORTCULLIS_LOGGING_LEVEL":           "verbose",
	}
	_, err := config.Load[Config](defaults,
		config.WithArgs(nil),
		config.WithLookupEnv(func(k string) (string, bool) { v, ok := environ[k]; return v, ok }))
	fmt.Println(err)
	// Output:
	// config: database.conn_lifetime (env PORTCULLIS_DATABASE_CONN_LIFETIME): invalid duration "forever": use a number with a unit, such as "15m" or "500ms"
	// config: database.max_open_conns (env PORTCULLIS_DATABASE_MAX_OPEN_CONNS): must be at most 1000, got 5000
	// config: logging.level (env PORTCULLIS_LOGGING_LEVEL): must be one of debug, info, warn, error, got "verbose"
}

func ExampleDSN() {
	dsn := config.DSN("host=db user=authsvc password=s3cret dbname=portcullis")
	fmt.Println(dsn)
	fmt.Printf("%#v\n", dsn)
	// Output:
	// host=db user=authsvc password=[REDACTED] dbname=portcullis
	// config.DSN("host=db user=authsvc password=[REDACTED] dbname=portcullis")
}
