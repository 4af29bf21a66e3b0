// Package platform runs the whole Portcullis platform on one machine: a Consul
// agent, the four core services and the gateway, each its own process, with
// their logs interleaved under a coloured name prefix.
//
// It backs `go tool task up`, `start` and `stop` (through cmd/platform) and the
// end-to-end tests, so a developer and a test start the platform the same way.
package platform
