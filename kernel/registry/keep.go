package registry

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/hashicorp/consul/api"
)

// KeepRegistered re-registers inst, registered before under id, whenever
// the Consul agent no longer knows it, until ctx ends. An agent that
// restarts without its state — a dev agent, a lost data directory —
// forgets its services, and nothing but the instance itself can tell it
// again. It asks the local agent once per check interval, which costs the
// agent a map lookup; an agent that does not answer is asked again at the
// next interval.
//
// ready, if not nil, says whether the instance is ready now. It comes back
// passing if so, so that callers do not lose an instance that was serving
// when its agent restarted, and critical until its first check if not:
// the agent may have forgotten it for failing its check too long, and it
// must not come back passing only to be reaped again.
func (r *Registry) KeepRegistered(ctx context.Context, id string, inst Instance, ready func(context.Context) bool) {
	inst.ID = id
	t := time.NewTicker(r.cfg.CheckInterval)
	defer t.Stop()
	var down outage
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Bounded: an agent that takes the connection and never answers
		// must not stop the checks for good.
		askCtx, cancel := context.WithTimeout(ctx, r.cfg.CheckInterval)
		_, _, err := r.client.Agent().Service(id, (&api.QueryOptions{}).WithContext(askCtx))
		cancel()
		if ctx.Err() == nil {
			r.noteReachable(ctx, &down, agentAnswered(err), id, err)
		}
		var status api.StatusError
		if !errors.As(err, &status) || status.Code != http.StatusNotFound {
			continue // known, or the agent is unreachable: nothing to repair
		}
		initial := api.HealthCritical
		if ready == nil || ready(ctx) {
			initial = api.HealthPassing
		}
		if _, err := r.register(ctx, inst, initial); err != nil {
			if ctx.Err() == nil {
				r.logger.WarnContext(ctx, "Consul does not know this instance and registering it failed",
					slog.String("id", id), slog.Any("error", err))
			}
			continue
		}
		r.logger.WarnContext(ctx, "Consul did not know this instance (its agent restarted, it was critical for longer than registry.deregister_critical_after, or the agent did not answer when it started); registered it",
			slog.String("id", id))
	}
}

// outageWarnEvery is how often an agent that stays unreachable is
// reported again.
const outageWarnEvery = 5 * time.Minute

// outage is how long the local agent has not answered, for the log.
type outage struct {
	since, warned time.Time
}

// noteReachable logs the agent becoming unreachable, staying so (every
// outageWarnEvery), and answering again. While it does not answer, this
// instance cannot be found, or was never registered (a wrong
// registry.addr): that must not go unsaid after one line at start-up.
func (r *Registry) noteReachable(ctx context.Context, down *outage, answered bool, id string, err error) {
	now := time.Now()
	switch {
	case answered && !down.since.IsZero():
		r.logger.InfoContext(ctx, "the Consul agent answers again", slog.String("id", id),
			slog.Duration("after", now.Sub(down.since).Round(time.Second)))
		*down = outage{}
	case !answered && down.since.IsZero():
		down.since, down.warned = now, now
		r.logger.WarnContext(ctx, "the Consul agent does not answer: this instance cannot be found through it until it does",
			slog.String("id", id), slog.String("addr", r.cfg.Addr), slog.Any("error", err))
	case !answered && now.Sub(down.warned) >= outageWarnEvery:
		down.warned = now
		r.logger.WarnContext(ctx, "the Consul agent still does not answer: this instance cannot be found through it",
			slog.String("id", id), slog.String("addr", r.cfg.Addr), slog.Duration("for", now.Sub(down.since).Round(time.Second)), slog.Any("error", err))
	}
}
