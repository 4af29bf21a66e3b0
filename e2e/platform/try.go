package platform

import "fmt"

// TryCommands are the commands `up` prints for a newcomer to paste, run
// from the repository root with $PASSWORD set to the admin's password: log
// in with Connect JSON over plain HTTP, read yourself, and list roles over
// gRPC. An e2e test runs them exactly as printed.
func TryCommands(gatewayURL, adminEmail string) []string {
	return []string{
		fmt.Sprintf(`TOKEN=$(curl -sf %s/portcullis.auth.v1.AuthService/Login -H 'Content-Type: application/json' \
    -d "{\"email\": \"%s\", \"password\": \"$PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')`, gatewayURL, adminEmail),
		fmt.Sprintf(`curl -sf %s/portcullis.identity.v1.IdentityService/GetMe -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{}'`, gatewayURL),
		fmt.Sprintf(`bin/buf curl --schema . --protocol grpc --http2-prior-knowledge -H "Authorization: Bearer $TOKEN" %s/portcullis.authz.v1.AuthzService/ListRoles -d '{}'`, gatewayURL),
	}
}
