package authz

import (
	"context"
	"fmt"
)

// Question is one permission check: may Subject do Permission, on
// Resource if it is set?
type Question struct {
	Subject    string
	Permission string
	Resource   string
}

// Check decides one question from the subject's decision index, loading
// it from the database on first use.
func (s *Service) Check(ctx context.Context, q Question) (bool, error) {
	if err := checkQuestion(q); err != nil {
		return false, err
	}
	d, err := s.decisions(ctx, q.Subject)
	if err != nil {
		return false, err
	}
	return d.allows(q.Permission, q.Resource), nil
}

// CheckBatch decides up to [MaxPermissionsPerCall] questions, answering in
// order.
func (s *Service) CheckBatch(ctx context.Context, qs []Question) ([]bool, error) {
	if len(qs) == 0 || len(qs) > MaxPermissionsPerCall {
		return nil, invalid("between 1 and %d checks are required", MaxPermissionsPerCall)
	}
	for i, q := range qs {
		if err := checkQuestion(q); err != nil {
			return nil, invalid("checks[%d]: %s", i, err)
		}
	}
	out := make([]bool, len(qs))
	for i, q := range qs {
		d, err := s.decisions(ctx, q.Subject)
		if err != nil {
			return nil, err
		}
		out[i] = d.allows(q.Permission, q.Resource)
	}
	return out, nil
}

// decisions returns subject's index: cached, or loaded.
func (s *Service) decisions(ctx context.Context, subject string) (*decisions, error) {
	if d := s.cache.get(subject); d != nil {
		return d, nil
	}
	return s.cache.load(ctx, subject, s.loadDecisions)
}

// loadDecisions reads subject's bindings and their roles' grants. The
// outer join keeps roles that grant nothing, so that a later grant to one
// of them still finds this subject to invalidate.
func (s *Service) loadDecisions(ctx context.Context, subject string) (*decisions, error) {
	rows, err := s.client.QueryContext(ctx, `SELECT b.role_id, b.resource, coalesce(p.name, '')
		FROM bindings b LEFT JOIN permissions p ON p.role_id = b.role_id
		WHERE b.user_id = $1`, subject)
	if err != nil {
		return nil, fmt.Errorf("load decisions: %w", err)
	}
	defer rows.Close()
	var grants []grant
	for rows.Next() {
		var g grant
		if err := rows.Scan(&g.Role, &g.Resource, &g.Permission); err != nil {
			return nil, fmt.Errorf("load decisions: %w", err)
		}
		grants = append(grants, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load decisions: %w", err)
	}
	return buildDecisions(grants), nil
}

// LocalAuthorizer answers the Authz service's own permission checks (its
// admin RPCs need authz.roles.write and the like) from its own decision
// index, instead of calling itself over the network. It implements the
// kernel's rpc.Authorizer.
type LocalAuthorizer struct{ S *Service }

// Check implements rpc.Authorizer.
func (a LocalAuthorizer) Check(ctx context.Context, subject, permission string) (bool, error) {
	return a.S.Check(ctx, Question{Subject: subject, Permission: permission})
}

// Cached reports whether subject's decisions are in the index; for tests
// and metrics.
func (s *Service) Cached(subject string) bool { return s.cache.get(subject) != nil }

// Live reports whether the notification connection is up, and so whether
// decisions are cached.
func (s *Service) Live() bool { return s.cache.live.Load() }
