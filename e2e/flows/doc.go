// Package flows holds end-to-end tests of the whole platform: the real
// binaries, Consul and PostgreSQL, driven from outside as a user or an
// operator would.
package flows
