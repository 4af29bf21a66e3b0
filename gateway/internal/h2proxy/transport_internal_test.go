package h2proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
)

// TestWaitersShareAFailedDial: streams that wait on a dial to an instance
// that accepts and then says nothing (its process hung) fail with that
// dial, and may go to another instance; before, each dialled again in turn,
// the last failing only after one dial timeout per stream ahead of it.
func TestWaitersShareAFailedDial(t *testing.T) {
	t.Parallel()
	hung := kerneltest.ServeTCP(t, func(nc net.Conn) { _, _ = io.Copy(io.Discard, nc) })
	const dialTimeout = 200 * time.Millisecond
	tr := &Transport{DialTimeout: dialTimeout}
	t.Cleanup(tr.Close)
	const streams = 5
	var wg sync.WaitGroup
	errs := make([]error, streams)
	took := make([]time.Duration, streams)
	for i := range streams {
		wg.Go(func() {
			start := time.Now()
			_, errs[i] = tr.get(context.Background(), hung)
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	shared := 0
	for i := range streams {
		require.Error(t, errs[i])
		notSent, ok := errors.AsType[*NotSentError](errs[i])
		require.True(t, ok, "stream %d may go elsewhere: %v", i, errs[i])
		assert.Less(t, took[i], 2*dialTimeout, "stream %d waited on dials after the first", i)
		if notSent.Shared {
			shared++
		}
	}
	// One dial failed: its caller counts it, and only it.
	assert.Equal(t, streams-1, shared)
}

// TestWaitersDialAgainAfterAnAbandonedDial: a dial that failed because its
// own caller left says nothing of the instance; those waiting on it dial
// again themselves instead of failing with it.
func TestWaitersDialAgainAfterAnAbandonedDial(t *testing.T) {
	t.Parallel()
	hung := kerneltest.ServeTCP(t, func(nc net.Conn) { _, _ = io.Copy(io.Discard, nc) })
	const dialTimeout = 300 * time.Millisecond
	tr := &Transport{DialTimeout: dialTimeout}
	t.Cleanup(tr.Close)
	leaving, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := tr.get(leaving, hung)
		first <- err
	}()
	require.Eventually(t, func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.dialing[hung] != nil
	}, time.Second, time.Millisecond)
	start := time.Now()
	_, err := tr.get(context.Background(), hung)
	require.Error(t, err)
	assert.GreaterOrEqual(t, time.Since(start), dialTimeout, "the waiter failed with the dial its caller abandoned")
	assert.ErrorIs(t, <-first, context.DeadlineExceeded)
}
