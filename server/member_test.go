package server_test

import (
	"net/http"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

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
			if reg.GetMember().GetId() == 0 {
				t.Fatalf("Register returned no id: %v", reg.GetMember())
			}
			// A member sees its own phone.
			self := &v1.Member{
				Id: reg.GetMember().GetId(), Phone: phone, Nickname: "Karl " + name, Gender: v1.Gender_GENDER_MALE,
				CreatedAt: &timestamppb.Timestamp{},
			}
			wantProto(t, "Register", self, reg.GetMember(), anyTime)
			login, err := mk("").Members.Login(ctx, &v1.LoginRequest{Phone: phone, Password: "s3cret-pass", DeviceName: "phone"})
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			if login.GetAccessToken() == "" || login.GetExpiresAt() == nil {
				t.Fatalf("Login returned no token: %v", login)
			}
			wantProto(t, "Login's member", self, login.GetMember(), anyTime)
			me, err := mk(login.GetAccessToken()).Members.GetMe(ctx, &v1.GetMeRequest{})
			if err != nil {
				t.Fatalf("GetMe: %v", err)
			}
			wantProto(t, "GetMe", reg.GetMember(), me.GetMember())
		})
	}
}

// TestCurlSession is the README's curl session: Register → Login → GetMe as
// raw JSON over HTTP/1.1.
func TestCurlSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	phone := newPhone()
	status, reg, raw := e.postJSON(t, "/karlmalone.v1.MemberService/Register", "",
		`{"phone":"`+phone+`","password":"s3cret-pass","nickname":"Karl","gender":"GENDER_MALE","avatar":"https://example.com/k.png"}`)
	if status != http.StatusOK {
		t.Fatalf("Register: %d %s", status, raw)
	}
	member := reg["member"].(map[string]any)
	id, ok := member["id"].(string) // int64 ids are JSON strings
	if !ok || id == "" || member["phone"] != phone || member["createdAt"] == nil {
		t.Fatalf("Register member = %v", member)
	}
	status, login, raw := e.postJSON(t, "/karlmalone.v1.MemberService/Login", "",
		`{"phone":"`+phone+`","password":"s3cret-pass","deviceName":"curl"}`)
	if status != http.StatusOK {
		t.Fatalf("Login: %d %s", status, raw)
	}
	token, _ := login["accessToken"].(string)
	if token == "" || login["expiresAt"] == nil {
		t.Fatalf("Login = %v", login)
	}
	status, me, raw := e.postJSON(t, "/karlmalone.v1.MemberService/GetMe", token, `{}`)
	if status != http.StatusOK {
		t.Fatalf("GetMe: %d %s", status, raw)
	}
	if got := me["member"].(map[string]any)["id"]; got != id {
		t.Fatalf("GetMe id = %v, want %v", got, id)
	}
}
