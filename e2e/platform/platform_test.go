package platform_test

import (
	"context"
	"database/sql"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/e2e/platform"
	"portcullis.dev/e2e/platformtest"
	"portcullis.dev/kernel/kerneltest"
)

func TestPlatformStartsAndStops(t *testing.T) {
	bin := platformtest.Build(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gatewayAddr := ln.Addr().String()
	require.NoError(t, ln.Close())

	var logs kerneltest.Buffer
	dbURL := platformtest.Database(t)
	p, err := platform.Start(t.Context(), platform.Options{
		BinDir:         bin,
		DatabaseURL:    dbURL,
		ConsulHTTPPort: -1,
		GatewayAddr:    gatewayAddr,
		Log:            &logs,
	})
	require.NoError(t, err, "logs:\n%s", logs.String())

	resp, err := http.Get(p.GatewayURL + "/healthz")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	// Each service runs as a role of its own that owns its schema.
	var owners []string
	rows, err := sqlDB(t, dbURL).Query(`SELECT nspname || '=' || pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname IN ('identity', 'auth', 'authz', 'audit') ORDER BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var o string
		require.NoError(t, rows.Scan(&o))
		owners = append(owners, o)
	}
	dbName := strings.TrimPrefix(mustParse(t, dbURL).Path, "/")
	assert.Equal(t, []string{"audit=" + dbName + "_audit", "auth=" + dbName + "_auth", "authz=" + dbName + "_authz", "identity=" + dbName + "_identity"}, owners)
	// Extensions a service's role may not create are there for it.
	var trgm string
	require.NoError(t, sqlDB(t, dbURL).QueryRow(`SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'`).Scan(&trgm))
	assert.Equal(t, "public", trgm, "pg_trgm's schema")
	resp, err = http.Get("http://" + p.ConsulAddr + "/v1/status/leader")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, p.Stop(ctx), "logs:\n%s", logs.String())

	_, err = http.Get(p.GatewayURL + "/healthz")
	assert.Error(t, err, "the gateway still answers after Stop")
	for _, name := range append([]string{"consul"}, platform.Services...) {
		assert.Contains(t, logs.String(), name+" ", "no log line from %s", name)
	}
}

func TestStartReportsAFailingProcess(t *testing.T) {
	bin := platformtest.Build(t)
	// A service that exits at once stands in for one that cannot start.
	require.NoError(t, os.Remove(filepath.Join(bin, "authzsvc")))
	require.NoError(t, os.WriteFile(filepath.Join(bin, "authzsvc"), []byte("#!/bin/sh\necho cannot reach the database >&2\nexit 3\n"), 0o755))

	_, err := platform.Start(t.Context(), platform.Options{BinDir: bin, DatabaseURL: platformtest.Database(t), ConsulHTTPPort: -1, GatewayAddr: "127.0.0.1:0"})
	var startErr *platform.StartError
	require.ErrorAs(t, err, &startErr)
	assert.Equal(t, "authzsvc", startErr.Name)
	assert.Contains(t, startErr.Error(), "cannot reach the database")
}

func sqlDB(t *testing.T, url string) *sql.DB {
	db, err := sql.Open("postgres", url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func mustParse(t *testing.T, raw string) *url.URL {
	u, err := url.Parse(raw)
	require.NoError(t, err)
	return u
}
