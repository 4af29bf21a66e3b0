package database_test

import (
	"io/fs"
	"testing"
	"testing/fstest"

	"ariga.io/atlas/sql/migrate"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/internal/testent"
)

// readAll copies the test migrations into a MapFS that tests may alter.
func readAll(t *testing.T) fstest.MapFS {
	t.Helper()
	m := fstest.MapFS{}
	require.NoError(t, fs.WalkDir(testent.Migrations(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(testent.Migrations(), path)
		m[path] = &fstest.MapFile{Data: b}
		return err
	}))
	return m
}

func clone(m fstest.MapFS) fstest.MapFS {
	c := fstest.MapFS{}
	for k, v := range m {
		c[k] = &fstest.MapFile{Data: append([]byte(nil), v.Data...)}
	}
	return c
}

// rehash computes the atlas.sum that matches the .sql files of m.
func rehash(t *testing.T, m fstest.MapFS) []byte {
	t.Helper()
	dir := &migrate.MemDir{}
	for name, f := range m {
		if name != migrate.HashFileName {
			require.NoError(t, dir.WriteFile(name, f.Data))
		}
	}
	sum, err := dir.Checksum()
	require.NoError(t, err)
	b, err := sum.MarshalText()
	require.NoError(t, err)
	return b
}
