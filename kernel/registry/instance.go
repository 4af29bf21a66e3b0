package registry

import (
	"cmp"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
)

// Instance is one instance of a service: what [Registry.Register] registers
// and what a [Resolver] returns.
type Instance struct {
	// ID identifies the instance within its Consul agent. Empty, when
	// registering, means one is made from Service, Address and Port.
	ID string
	// Service is the Consul service name, such as "identity".
	Service string
	// Address is the host or IP address other services call the instance
	// on.
	Address string
	// Port is the TCP port the instance serves on.
	Port int
	// Version is the instance's release, such as "v0.3.0". Empty means
	// unknown.
	Version string
	// ConnectServices are the fully-qualified Connect services the
	// instance serves, such as "portcullis.identity.v1.IdentityService".
	ConnectServices []string
	// Meta is further metadata; it must not use the keys [MetaVersion] or
	// [MetaConnectServices], which carry Version and ConnectServices. Nil
	// means none.
	Meta map[string]string
}

// HostPort returns the instance's address and port as host:port, with an
// IPv6 address in brackets: what to dial.
func (i Instance) HostPort() string {
	return net.JoinHostPort(i.Address, strconv.Itoa(i.Port))
}

// instanceFromEntry converts a health entry to an Instance. A service
// registered without an address is reached on its node's address, as
// Consul's DNS interface does.
func instanceFromEntry(e *api.ServiceEntry) Instance {
	s := e.Service
	inst := Instance{
		ID:      s.ID,
		Service: s.Service,
		Address: s.Address,
		Port:    s.Port,
		Version: s.Meta[MetaVersion],
	}
	if inst.Address == "" && e.Node != nil {
		inst.Address = e.Node.Address
	}
	if cs := s.Meta[MetaConnectServices]; cs != "" {
		inst.ConnectServices = strings.Split(cs, ",")
	}
	for k, v := range s.Meta {
		if k == MetaVersion || k == MetaConnectServices {
			continue
		}
		if inst.Meta == nil {
			inst.Meta = make(map[string]string, len(s.Meta))
		}
		inst.Meta[k] = v
	}
	return inst
}

// compareInstances orders instances by address, port and ID, so that a set
// has one order and two answers can be compared.
func compareInstances(a, b Instance) int {
	return cmp.Or(
		strings.Compare(a.Address, b.Address),
		cmp.Compare(a.Port, b.Port),
		strings.Compare(a.ID, b.ID),
	)
}

func equalInstance(a, b Instance) bool {
	return a.ID == b.ID && a.Service == b.Service && a.Address == b.Address &&
		a.Port == b.Port && a.Version == b.Version &&
		slices.Equal(a.ConnectServices, b.ConnectServices) && maps.Equal(a.Meta, b.Meta)
}

func equalInstances(a, b []Instance) bool { return slices.EqualFunc(a, b, equalInstance) }

// mergeInstances returns the instances of newer and those of earlier that
// newer lacks (by ID), ordered as a [Resolver] orders them.
func mergeInstances(earlier, newer []Instance) []Instance {
	merged := slices.Clone(newer)
	for _, e := range earlier {
		if !slices.ContainsFunc(newer, func(n Instance) bool { return n.ID == e.ID }) {
			merged = append(merged, e)
		}
	}
	slices.SortFunc(merged, compareInstances)
	return merged
}
