// Package proto is the root of the Portcullis API contracts module. It holds no code of its
// own; the module's packages are:
//
//   - portcullis/<service>/v1/*.proto: the protobuf sources, package portcullis.<service>.v1.
//   - <service>/v1 (package <service>v1): generated messages of the Identity, Auth, Authz and
//     Audit services, and <service>/v1/<service>v1connect their generated Connect clients and
//     handler interfaces.
//   - options/v1 (package optionsv1): the (portcullis.options.v1.access) method option.
//   - access: reads the access rule of a procedure from its descriptor.
//
// The generated code is committed; regenerate it with `bin/buf generate` from the repository
// root. The tests in this directory check the contracts themselves, for example that every
// RPC carries an access rule.
package proto
