package access_test

import (
	"fmt"

	"portcullis.dev/proto/access"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

func ExampleForProcedure() {
	rule, ok := access.ForProcedure(identityv1connect.IdentityServiceGetUserProcedure)
	fmt.Println(ok, rule)
	// Output: true {level: ACCESS_AUTHENTICATED, permission: "identity.users.read", subject_field: "user_id"}
}

func ExampleAll() {
	for _, p := range access.All()[:3] {
		fmt.Println(p.Name, p.Rule)
	}
	// Output:
	// /portcullis.identity.v1.IdentityService/CreateUser {level: ACCESS_PUBLIC}
	// /portcullis.identity.v1.IdentityService/GetUser {level: ACCESS_AUTHENTICATED, permission: "identity.users.read", subject_field: "user_id"}
	// /portcullis.identity.v1.IdentityService/GetMe {level: ACCESS_AUTHENTICATED}
}
