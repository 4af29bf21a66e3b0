package kerneltest_test

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
)

func TestDatabaseURL(t *testing.T) {
	tests := []struct {
		name, env, want string
	}{
		{"default", "", kerneltest.DefaultDatabaseURL},
		{"from env", "postgres://u@db:5432/x", "postgres://u@db:5432/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PORTCULLIS_TEST_DATABASE_URL", tt.env)
			assert.Equal(t, tt.want, kerneltest.DatabaseURL())
		})
	}
}

func TestInCI(t *testing.T) {
	for env, want := range map[string]bool{"true": true, "1": true, "": false, "false": false, "nonsense": false} {
		t.Setenv("CI", env)
		assert.Equal(t, want, kerneltest.InCI(), "CI=%q", env)
	}
}

func TestServeTCP(t *testing.T) {
	t.Parallel()
	got := make(chan string, 2)
	var open net.Conn
	t.Run("serves", func(t *testing.T) {
		addr := kerneltest.ServeTCP(t, func(c net.Conn) {
			b := make([]byte, 4)
			n, _ := io.ReadFull(c, b)
			got <- string(b[:n])
			_, _ = c.Read(b) // holds the connection until the test ends
		})
		for _, msg := range []string{"ping", "pong"} {
			c, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close() })
			_, err = c.Write([]byte(msg))
			require.NoError(t, err)
			assert.Equal(t, msg, <-got)
		}
		var err error
		open, err = net.Dial("tcp", addr)
		require.NoError(t, err)
	})
	// The subtest has ended: the connections it left open are closed.
	defer open.Close()
	require.NoError(t, open.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := open.Read(make([]byte, 1))
	require.Error(t, err)
	var ne net.Error
	assert.False(t, errors.As(err, &ne) && ne.Timeout(), "a connection outlived its test")
}

func TestRefusingAddr(t *testing.T) {
	t.Parallel()
	addr := kerneltest.RefusingAddr(t)
	_, err := net.DialTimeout("tcp", addr, time.Second)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	_, err = net.Listen("tcp", addr)
	require.Error(t, err, "the port went to another listener")
}
