package platform

import "fmt"

// TryCommands are the commands `up` prints for a newcomer to paste, run
// from the repository root with $PASSWORD set to the admin's password: log
// in with Connect JSON over plain HTTP, read yourself, and list roles over
// gRPC. An e2e test runs them exactly as printed.
//
// They need nothing a machine with Go and PostgreSQL lacks: curl, and sed
// to pick the access token out of the JSON (a JWT holds no quotes, so the
// pattern cannot cut it short), and bin/buf, which up builds.
func TryCommands(gatewayURL, adminEmail string) []string {
	return []string{
		fmt.Sprintf(`TOKEN=$(curl -sf %s/portcullis.auth.v1.AuthService/Login -H 'Content-Type: application/json' \
    -d "{\"email\": \"%s\", \"password\": \"$PASSWORD\"}" | sed -n 's/.*"accessToken": *"\([^"]*\)".*/\1/p')`, gatewayURL, adminEmail),
		fmt.Sprintf(`curl -sf %s/portcullis.identity.v1.IdentityService/GetMe -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{}'`, gatewayURL),
		fmt.Sprintf(`bin/buf curl --schema . --protocol grpc --http2-prior-knowledge -H "Authorization: Bearer $TOKEN" %s/portcullis.authz.v1.AuthzService/ListRoles -d '{}'`, gatewayURL),
	}
}
