// Package rpc is how every Portcullis service serves and calls Connect APIs.
//
// A [Server] serves Connect, gRPC and gRPC-Web over HTTP/1.1 and cleartext
// HTTP/2 on one listener, with gRPC health and reflection, /healthz, /readyz
// and Prometheus /metrics, and a fixed chain of interceptors: access log and
// metrics, panic recovery, and access enforcement from the contract's
// options ([AccessPolicy]). Every request carries an X-Request-Id. Its
// [Server.Run] listens, registers the instance in Consul, serves until its
// context ends, and then shuts down in order: not ready, deregistered,
// in-flight calls drained, resources closed.
//
// A [ClientFactory] turns a Consul service name and a generated Connect
// constructor into a client on a load-balancing transport over the
// registry's resolver; the generated interfaces are the client interfaces.
package rpc
