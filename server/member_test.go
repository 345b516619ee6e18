package server_test

import (
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// TestRegisterLoginGetMe walks the first thing every client does, through the
// Connect protocol (binary and JSON) and gRPC over h2c.
func TestRegisterLoginGetMe(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	protocols := map[string]func(token string) *client{
		"connect-proto": func(tok string) *client { return e.clients(tok) },
		"connect-json":  func(tok string) *client { return e.clients(tok, connect.WithProtoJSON()) },
		"grpc-h2c":      e.grpcClients,
	}
	for name, mk := range protocols {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			phone := newPhone()
			reg, err := mk("").Members.Register(ctx, &v1.RegisterRequest{
				Phone: phone, Password: "s3cret-pass", Nickname: "Karl " + name, Gender: v1.Gender_GENDER_MALE,
			})
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			if reg.GetMember().GetId() == 0 || reg.GetMember().GetPhone() != phone {
				t.Fatalf("Register returned %v", reg.GetMember())
			}
			login, err := mk("").Members.Login(ctx, &v1.LoginRequest{Phone: phone, Password: "s3cret-pass", DeviceName: "phone"})
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			if login.GetAccessToken() == "" || login.GetExpiresAt() == nil || login.GetMember().GetId() != reg.GetMember().GetId() {
				t.Fatalf("Login returned %v", login)
			}
			me, err := mk(login.GetAccessToken()).Members.GetMe(ctx, &v1.GetMeRequest{})
			if err != nil {
				t.Fatalf("GetMe: %v", err)
			}
			if me.GetMember().GetId() != reg.GetMember().GetId() || me.GetMember().GetNickname() != "Karl "+name {
				t.Fatalf("GetMe returned %v", me.GetMember())
			}
		})
	}
}
