package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"portcullis.dev/kernel/logging"
)

// gcra is the algorithm of [Memory.Allow] in Lua, so that a decision over
// several buckets is one atomic step in Redis however many gateways ask.
// The time is Redis's own, so gateways with skewed clocks agree. Times are
// microseconds, which a Lua number (a double) holds exactly; they are
// written with %.0f because Lua's default formatting keeps 14 digits.
//
// KEYS: the buckets. ARGV: for each, its emission interval and its
// tolerance (interval × burst) in µs. Returns {allowed, index of the
// deciding bucket (1-based), retry after µs, remaining, reset µs}.
var gcra = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local news = {}
local worst, worst_retry = 0, 0
for i = 1, #KEYS do
  local T = tonumber(ARGV[2*i-1])
  local tau = tonumber(ARGV[2*i])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then tat = now end
  local new = tat + T
  local retry = new - tau - now
  if retry > worst_retry then worst, worst_retry = i, retry end
  news[i] = new
end
if worst > 0 then
  return {0, worst, worst_retry, 0, news[worst] - tonumber(ARGV[2*worst-1]) - now}
end
local tight, tight_rem = 1, -1
for i = 1, #KEYS do
  local T = tonumber(ARGV[2*i-1])
  local tau = tonumber(ARGV[2*i])
  local ttl = news[i] - now
  redis.call('SET', KEYS[i], string.format('%.0f', news[i]), 'PX', math.ceil(ttl / 1000))
  local rem = math.floor((tau - ttl) / T)
  if tight_rem < 0 or rem < tight_rem then tight, tight_rem = i, rem end
end
return {1, tight, 0, tight_rem, news[tight] - now}
`)

// Redis is a [Limiter] whose buckets live in Redis, shared by every gateway
// using the same Redis and key prefix. It is safe for concurrent use.
// The zero value is not usable; call [NewRedis].
type Redis struct {
	client  redis.UniversalClient
	prefix  string
	timeout time.Duration
}

// NewRedis returns a limiter over client whose keys start with prefix.
// Each decision is bounded by timeout (zero: 100ms).
func NewRedis(client redis.UniversalClient, prefix string, timeout time.Duration) *Redis {
	if timeout <= 0 {
		timeout = 100 * time.Millisecond
	}
	return &Redis{client: client, prefix: prefix, timeout: timeout}
}

// NewRedisClient opens a client for url (redis://...) tuned for a limiter:
// short timeouts and no retries, since [Fallback] handles failure.
// go-redis's own diagnostics (a failed dial, say) go to logger at debug
// level: [Fallback] reports an outage, with its cause, once. go-redis has
// one logger for the whole process, so the last client's wins.
func NewRedisClient(rawURL string, timeout time.Duration, logger *slog.Logger) (*redis.Client, error) {
	// A password with /, ? or # in it, not percent-encoded, makes a URL
	// that go-redis refuses by quoting the part after it, or reads as
	// another address: such an error may hold the password, and is not
	// passed on.
	errBadURL := errors.New("redis url: not a valid URL (a password with %, /, ?, # or @ in it must be percent-encoded)")
	if u, err := url.Parse(rawURL); err != nil || u.Fragment != "" || strings.Contains(u.Path+u.RawQuery, "@") {
		return nil, errBadURL
	}
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		if strings.Contains(rawURL, "@") {
			return nil, errBadURL
		}
		return nil, fmt.Errorf("redis url: %w", err)
	}
	redis.SetLogger(redisLogger{logging.OrDiscard(logger)})
	opts.DialTimeout = max(timeout*5, 500*time.Millisecond)
	opts.ReadTimeout = timeout
	opts.WriteTimeout = timeout
	opts.MaxRetries = -1
	// go-redis dials again after a refused dial, five times 100ms apart by
	// default: a refused connection would cost the whole timeout, and the
	// error say only that the time ran out.
	opts.DialerRetries = 1
	// The decision's context bounds the socket's reads and writes too, not
	// only the wait for a connection: otherwise one decision could take
	// the pool's wait and then ReadTimeout on top of it.
	opts.ContextTimeoutEnabled = true
	return redis.NewClient(opts), nil
}

// Allow implements [Limiter].
func (r *Redis) Allow(ctx context.Context, buckets ...Bucket) (Decision, error) {
	buckets = active(buckets)
	if len(buckets) == 0 {
		return Decision{Allowed: true}, nil
	}
	keys := make([]string, len(buckets))
	args := make([]any, 0, 2*len(buckets))
	for i, b := range buckets {
		keys[i] = r.prefix + b.Name + ":" + b.Key
		t := b.Limit.interval().Microseconds()
		args = append(args, strconv.FormatInt(t, 10), strconv.FormatInt(t*int64(b.Limit.burst()), 10))
	}
	// The client leaving does not cut the decision short: Redis is judged
	// by its own answer, within its own timeout, and a client that gives
	// up sooner does not hide an outage from [Fallback].
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
	defer cancel()
	res, err := gcra.Run(ctx, r.client, keys, args...).Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("rate limit in redis: %w", err)
	}
	if len(res) != 5 || res[1] < 1 || int(res[1]) > len(buckets) {
		return Decision{}, fmt.Errorf("rate limit in redis: unexpected answer %v", res)
	}
	b := buckets[res[1]-1]
	return Decision{
		Allowed:    res[0] == 1,
		Bucket:     b.Name,
		Limit:      b.Limit,
		Remaining:  int(res[3]),
		RetryAfter: time.Duration(res[2]) * time.Microsecond,
		Reset:      time.Duration(res[4]) * time.Microsecond,
	}, nil
}

// redisLogger hands go-redis's diagnostics to slog.
type redisLogger struct{ logger *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.logger.DebugContext(ctx, fmt.Sprintf(format, v...), "from", "go-redis")
}
