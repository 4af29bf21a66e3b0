package edge_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// TestRefusedRequestsAreLoggedAndCounted: a request the HTTP/2 layer
// refuses before any handler sees it, malformed or with headers too
// large, still gets a log line and a count, as a served one does.
func TestRefusedRequestsAreLoggedAndCounted(t *testing.T) {
	e := newEnv(t)
	gw := e.startGateway(t, e.config(t))
	const procedure = identityv1connect.IdentityServiceCreateUserProcedure
	tests := []struct {
		name   string
		fields [][2]string
		code   string
		route  string
	}{
		{name: "content-length of a body that never comes", fields: [][2]string{{"content-length", "5"}}, code: "protocol_error", route: procedure},
		// Refused by x/net's reader before the headers are known.
		{name: "upper-case field name", fields: [][2]string{{"X-Upper", "v"}}, code: "protocol_error", route: "unknown"},
		// Over gateway.max_header_bytes, 64 KiB, as the list's size counts
		// (32 bytes a field more than its name and value), in 26 KB sent:
		// x/net's reader gives up on the connection when the bytes sent
		// are far over the limit.
		{name: "headers too large", fields: manyFields(2000, 1), code: "431", route: procedure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := countRequests(t, gw.url, tt.route, tt.code)
			logged := strings.Count(e.logs.String(), `"msg":"request refused"`)
			sendRaw(t, gw.url, procedure+"?q=1", tt.fields)
			assert.Eventually(t, func() bool {
				return countRequests(t, gw.url, tt.route, tt.code) == before+1
			}, 5*time.Second, 10*time.Millisecond, "the refusal is counted")
			// The counter and the histogram are two updates: a scrape
			// may fall between them.
			assert.Eventually(t, func() bool {
				requests, observed := countAll(t, gw.url, tt.route)
				return requests == observed
			}, 5*time.Second, 10*time.Millisecond, "every request's latency is observed, refusals too")
			assert.Eventually(t, func() bool {
				var refusals []string
				for line := range strings.Lines(e.logs.String()) {
					if strings.Contains(line, `"msg":"request refused"`) {
						refusals = append(refusals, line)
					}
				}
				if len(refusals) <= logged {
					return false
				}
				last := refusals[logged]
				return strings.Contains(last, `"code":"`+tt.code+`"`) && strings.Contains(last, `"route":"`+tt.route+`"`)
			}, 5*time.Second, 10*time.Millisecond, "the refusal is logged")
		})
	}
}

// manyFields returns n fields with values of size bytes.
func manyFields(n, size int) [][2]string {
	fields := make([][2]string, n)
	for i := range fields {
		fields[i] = [2]string{fmt.Sprintf("x-field-%d", i), strings.Repeat("x", size)}
	}
	return fields
}

// sendRaw sends one POST of path with extra fields and no body, the
// stream ended with its headers, and waits for the gateway's answer.
func sendRaw(t *testing.T, base, path string, extra [][2]string) {
	t.Helper()
	u, err := url.Parse(base)
	require.NoError(t, err)
	nc, err := net.Dial("tcp", u.Host)
	require.NoError(t, err)
	defer nc.Close()
	_, err = nc.Write([]byte(http2.ClientPreface))
	require.NoError(t, err)
	fr := http2.NewFramer(nc, nc)
	require.NoError(t, fr.WriteSettings())
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	fields := append([][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", u.Host}, {":path", path},
		{"content-type", "application/proto"}}, extra...)
	for _, f := range fields {
		require.NoError(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	// Headers larger than a frame continue in CONTINUATION frames.
	const frame = 16 << 10
	b := block.Bytes()
	first := b[:min(len(b), frame)]
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true, EndHeaders: len(b) <= frame}))
	for b = b[len(first):]; len(b) > 0; {
		n := min(len(b), frame)
		require.NoError(t, fr.WriteContinuation(1, n == len(b), b[:n]))
		b = b[n:]
	}
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(5*time.Second)))
	for {
		f, err := fr.ReadFrame()
		require.NoError(t, err, "the gateway answers the stream")
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			return
		case *http2.HeadersFrame:
			if f.StreamEnded() {
				return
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				return
			}
		}
	}
}

// countRequests reads portcullis_gateway_requests_total for route and code
// from the gateway's metrics.
func countRequests(t *testing.T, base, route, code string) int {
	t.Helper()
	return int(scrape(t, base)[`portcullis_gateway_requests_total{code="`+code+`",route="`+route+`"}`])
}

// countAll reads from one scrape of the gateway's metrics how many
// requests route had, whatever their code, and how many latencies its
// histogram holds.
func countAll(t *testing.T, base, route string) (requests, observed int) {
	t.Helper()
	samples := scrape(t, base)
	for name, v := range samples {
		if strings.HasPrefix(name, "portcullis_gateway_requests_total{") && strings.HasSuffix(name, `,route="`+route+`"}`) {
			requests += int(v)
		}
	}
	return requests, int(samples[`portcullis_gateway_request_duration_seconds_count{route="`+route+`"}`])
}

// scrape reads the gateway's metrics: each sample's value by its name and
// labels as the text format writes them.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	samples := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		name, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		require.NoError(t, err, "sample %s", line)
		samples[name] = f
	}
	return samples
}

// TestProbesAreCountedApart: probes and scrapes of the gateway's own
// endpoints count under routes of their own and stay out of the access log
// at info level, so that "unknown" means paths nobody serves.
func TestProbesAreCountedApart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gw := e.startGateway(t, e.config(t))
	for _, path := range []string{"/healthz", "/readyz", "/nope"} {
		res, err := http.Get(gw.url + path)
		require.NoError(t, err)
		_ = res.Body.Close()
	}
	samples := scrape(t, gw.url) // itself counted after it is written
	assert.Equal(t, 2.0, samples[`portcullis_gateway_requests_total{code="200",route="health"}`])
	assert.Equal(t, 1.0, samples[`portcullis_gateway_requests_total{code="404",route="unknown"}`])
	for line := range strings.Lines(e.logs.String()) {
		if strings.Contains(line, `"path":"/healthz"`) || strings.Contains(line, `"path":"/readyz"`) {
			assert.Contains(t, line, `"level":"DEBUG"`)
		}
	}
}
