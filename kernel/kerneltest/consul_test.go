package kerneltest_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
)

func TestStartConsul(t *testing.T) {
	t.Parallel()
	c := kerneltest.StartConsul(t)
	addr := c.Addr()
	assert.NotEmpty(t, leader(t, addr), "a leader once started")

	c.Restart()
	assert.Equal(t, addr, c.Addr(), "the HTTP address survives a restart")
	assert.NotEmpty(t, leader(t, addr), "a leader once restarted")

	c.Stop()
	_, err := http.Get("http://" + addr + "/v1/status/leader")
	require.Error(t, err, "a stopped agent does not answer")
	c.Stop() // a second Stop does nothing
}

func TestStartConsulParallel(t *testing.T) {
	t.Parallel()
	a, b := kerneltest.StartConsul(t), kerneltest.StartConsul(t)
	assert.NotEqual(t, a.Addr(), b.Addr())
}

func leader(t *testing.T, addr string) string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + addr + "/v1/status/leader")
	require.NoError(t, err)
	defer resp.Body.Close()
	var l string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&l))
	return l
}
