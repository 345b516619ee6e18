package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// TestBadInputNeverFails5xx sends what a careless or hostile client sends, as
// raw JSON over HTTP/1.1, and checks each gets the right Connect code (and
// names the bad field) and never a 5xx.
func TestBadInputNeverFails5xx(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	taken := e.register(t, "taken")
	revoked := e.login(t, taken.Phone, taken.Password)
	if _, err := revoked.Members.Logout(t.Context(), &v1.LogoutRequest{}); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	// A token that lives a nanosecond has expired by the time it is used.
	shortLived := newEnv(t, withConfig(func(c *server.Config) { c.TokenTTL = time.Nanosecond }))
	expired := shortLived.register(t, "expired")
	// Someone to befriend and a group of one's own, for the NUL cases below.
	peer, stranger := e.register(t, "peer"), e.register(t, "stranger")
	makeContacts(t, taken, peer)
	group := newGroup(t, taken)
	const (
		register = "/karlmalone.v1.MemberService/Register"
		login    = "/karlmalone.v1.MemberService/Login"
		getMe    = "/karlmalone.v1.MemberService/GetMe"
		update   = "/karlmalone.v1.MemberService/UpdateProfile"
		search   = "/karlmalone.v1.MemberService/SearchMembers"
		request  = "/karlmalone.v1.ContactService/SendFriendRequest"
		remark   = "/karlmalone.v1.ContactService/SetContactRemark"
		create   = "/karlmalone.v1.GroupService/CreateGroup"
		updGroup = "/karlmalone.v1.GroupService/UpdateGroup"
		convs    = "/karlmalone.v1.ChatService/ListConversations"
		// nul is a JSON-escaped NUL character: PostgreSQL text cannot hold it,
		// so the "text" tag must refuse it and name the field.
		nul = `\u0000`
	)
	gid := fmt.Sprint(group.GetId())
	ok := `"password":"s3cret-pass","nickname":"n"`
	cases := []struct {
		name, procedure, token, body string
		code                         connect.Code
		mention                      string // the message must name this
	}{
		{"missing phone", register, "", `{` + ok + `}`, connect.CodeInvalidArgument, "phone"},
		{"malformed phone", register, "", `{"phone":"555-1234",` + ok + `}`, connect.CodeInvalidArgument, "phone"},
		{"phone without plus", register, "", `{"phone":"14155550100",` + ok + `}`, connect.CodeInvalidArgument, "phone"},
		{"short password", register, "", `{"phone":"+14155550100","password":"short","nickname":"n"}`, connect.CodeInvalidArgument, "password"},
		{"long password", register, "", `{"phone":"+14155550100","password":"` + strings.Repeat("p", 129) + `","nickname":"n"}`, connect.CodeInvalidArgument, "password"},
		{"missing nickname", register, "", `{"phone":"+14155550100","password":"s3cret-pass"}`, connect.CodeInvalidArgument, "nickname"},
		{"blank nickname", register, "", `{"phone":"+14155550100","password":"s3cret-pass","nickname":"   "}`, connect.CodeInvalidArgument, "nickname"},
		{"long nickname", register, "", `{"phone":"+14155550100","password":"s3cret-pass","nickname":"` + strings.Repeat("名", 33) + `"}`, connect.CodeInvalidArgument, "nickname"},
		{"avatar not http", register, "", `{"phone":"+14155550100",` + ok + `,"avatar":"javascript:alert(1)"}`, connect.CodeInvalidArgument, "avatar"},
		{"unknown gender number", register, "", `{"phone":"+14155550100",` + ok + `,"gender":9}`, connect.CodeInvalidArgument, "gender"},
		{"long memo", register, "", `{"phone":"+14155550100",` + ok + `,"memo":"` + strings.Repeat("m", 257) + `"}`, connect.CodeInvalidArgument, "memo"},
		{"every field bad", register, "", `{"phone":"x","password":"y","nickname":""}`, connect.CodeInvalidArgument, "password"},
		{"wrong JSON type", register, "", `{"phone":14155550100,` + ok + `}`, connect.CodeInvalidArgument, ""},
		{"array body", register, "", `[1,2,3]`, connect.CodeInvalidArgument, ""},
		{"broken JSON", register, "", `{"phone":`, connect.CodeInvalidArgument, ""},
		{"8 MiB body", register, "", `{"phone":"+14155550100",` + ok + `,"memo":"` + strings.Repeat("m", 8<<20) + `"}`, connect.CodeResourceExhausted, ""},
		{"duplicate phone", register, "", `{"phone":"` + taken.Phone + `",` + ok + `}`, connect.CodeAlreadyExists, "phone"},
		{"wrong password", login, "", `{"phone":"` + taken.Phone + `","password":"not-the-password"}`, connect.CodeUnauthenticated, "wrong phone or password"},
		{"unknown phone", login, "", `{"phone":"+19995550100","password":"not-the-password"}`, connect.CodeUnauthenticated, "wrong phone or password"},
		{"login without password", login, "", `{"phone":"` + taken.Phone + `"}`, connect.CodeInvalidArgument, "password"},
		{"no token", getMe, "", `{}`, connect.CodeUnauthenticated, "token"},
		{"garbage token", getMe, "garbage", `{}`, connect.CodeUnauthenticated, "token"},
		{"huge token", getMe, strings.Repeat("t", 4000), `{}`, connect.CodeUnauthenticated, "token"},
		{"revoked token", getMe, revoked.Token, `{}`, connect.CodeUnauthenticated, "token"},
		{"update: long nickname", update, taken.Token, `{"nickname":"` + strings.Repeat("n", 33) + `"}`, connect.CodeInvalidArgument, "nickname"},
		{"update: bad avatar", update, taken.Token, `{"avatar":"not a url"}`, connect.CodeInvalidArgument, "avatar"},
		{"NUL in nickname", register, "", `{"phone":"+14155550100","password":"s3cret-pass","nickname":"a` + nul + `b"}`, connect.CodeInvalidArgument, "nickname:"},
		{"NUL in memo", register, "", `{"phone":"+14155550100",` + ok + `,"memo":"` + nul + `"}`, connect.CodeInvalidArgument, "memo:"},
		{"NUL in device name", login, "", `{"phone":"` + taken.Phone + `","password":"` + taken.Password + `","deviceName":"` + nul + `"}`, connect.CodeInvalidArgument, "device_name:"},
		{"update: NUL in nickname", update, taken.Token, `{"nickname":"a` + nul + `"}`, connect.CodeInvalidArgument, "nickname:"},
		{"update: NUL in memo", update, taken.Token, `{"memo":"` + nul + `"}`, connect.CodeInvalidArgument, "memo:"},
		{"NUL in search query", search, taken.Token, `{"query":"a` + nul + `"}`, connect.CodeInvalidArgument, "query:"},
		{"NUL in friend-request note", request, taken.Token, `{"memberId":"` + fmt.Sprint(stranger.ID) + `","note":"` + nul + `"}`, connect.CodeInvalidArgument, "note:"},
		{"NUL in remark", remark, taken.Token, `{"memberId":"` + fmt.Sprint(peer.ID) + `","remark":"` + nul + `"}`, connect.CodeInvalidArgument, "remark:"},
		{"NUL in group name", create, taken.Token, `{"name":"g` + nul + `"}`, connect.CodeInvalidArgument, "name:"},
		{"NUL in group notice", create, taken.Token, `{"name":"g","notice":"` + nul + `"}`, connect.CodeInvalidArgument, "notice:"},
		{"update: NUL in group name", updGroup, taken.Token, `{"groupId":"` + gid + `","name":"` + nul + `"}`, connect.CodeInvalidArgument, "name:"},
		{"update: NUL in group notice", updGroup, taken.Token, `{"groupId":"` + gid + `","notice":"` + nul + `"}`, connect.CodeInvalidArgument, "notice:"},
		// Well-formed tokens with times no row has: past what PostgreSQL
		// holds (4713 BC), and as far as an int64 goes either way.
		{"page token in 10,000 BC", convs, taken.Token, `{"pageToken":"` + timeToken(-377_705_116_800_000_000, 1) + `"}`, connect.CodeInvalidArgument, "page_token:"},
		{"page token at the end of time", convs, taken.Token, `{"pageToken":"` + timeToken(math.MaxInt64, 1) + `"}`, connect.CodeInvalidArgument, "page_token:"},
		{"page token at the start of time", convs, taken.Token, `{"pageToken":"` + timeToken(math.MinInt64, 1) + `"}`, connect.CodeInvalidArgument, "page_token:"},
	}
	check := func(t *testing.T, srv *env, procedure, token, body string, code connect.Code, mention string) {
		status, res, raw := srv.postJSON(t, procedure, token, body)
		if status >= 500 {
			t.Fatalf("status %d: %s", status, raw)
		}
		if got := res["code"]; got != code.String() {
			t.Fatalf("code %v, want %v (status %d, body %s)", got, code, status, truncate(raw))
		}
		if msg, _ := res["message"].(string); !strings.Contains(msg, mention) {
			t.Fatalf("message %q does not mention %q", msg, mention)
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { check(t, e, tc.procedure, tc.token, tc.body, tc.code, tc.mention) })
	}
	t.Run("expired token", func(t *testing.T) {
		check(t, shortLived, getMe, expired.Token, `{}`, connect.CodeUnauthenticated, "token")
	})
	// The server is still fine.
	if _, err := taken.Members.GetMe(t.Context(), &v1.GetMeRequest{}); err != nil {
		t.Fatalf("GetMe after the storm: %v", err)
	}
}

// timeToken forges a ListConversations page token: a time (microseconds
// since 1970) and a conversation id, packed as page.go packs them.
func timeToken(micros, id int64) string {
	b := []byte{2}
	b = binary.BigEndian.AppendUint64(b, uint64(micros))
	b = binary.BigEndian.AppendUint64(b, uint64(id))
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestUnknownPhoneAndWrongPasswordLookAlike: Login must not reveal who is registered.
func TestUnknownPhoneAndWrongPasswordLookAlike(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.register(t, "someone")
	anon := e.clients("")
	_, errWrong := anon.Members.Login(t.Context(), &v1.LoginRequest{Phone: m.Phone, Password: "wrong-password"})
	_, errUnknown := anon.Members.Login(t.Context(), &v1.LoginRequest{Phone: newPhone(), Password: "wrong-password"})
	wantCode(t, errWrong, connect.CodeUnauthenticated)
	wantCode(t, errUnknown, connect.CodeUnauthenticated)
	if errWrong.Error() != errUnknown.Error() {
		t.Fatalf("errors differ: %q vs %q", errWrong, errUnknown)
	}
}

// TestNoSecretsInResponsesOrLogs runs every credential-bearing call and checks
// that no response body or log line carries a password, hash or token.
func TestNoSecretsInResponsesOrLogs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const pw, newPw = "first-Secret-9041", "second-Secret-7730"
	phone := newPhone()
	var seen bytes.Buffer
	post := func(procedure, token, body string) map[string]any {
		_, out, raw := e.postJSON(t, procedure, token, body)
		if _, ok := out["accessToken"]; !ok { // handing out the token is Login's job
			seen.WriteString(raw)
		}
		return out
	}
	post("/karlmalone.v1.MemberService/Register", "", `{"phone":"`+phone+`","password":"`+pw+`","nickname":"quiet"}`)
	post("/karlmalone.v1.MemberService/Register", "", `{"phone":"`+phone+`","password":"`+pw+`","nickname":"again"}`)
	post("/karlmalone.v1.MemberService/Login", "", `{"phone":"`+phone+`","password":"wrong-`+pw+`"}`)
	login := post("/karlmalone.v1.MemberService/Login", "", `{"phone":"`+phone+`","password":"`+pw+`"}`)
	token := login["accessToken"].(string)
	other := post("/karlmalone.v1.MemberService/Login", "", `{"phone":"`+phone+`","password":"`+pw+`"}`)["accessToken"].(string)
	post("/karlmalone.v1.MemberService/GetMe", token, `{}`)
	post("/karlmalone.v1.MemberService/ListSessions", token, `{}`)
	post("/karlmalone.v1.MemberService/ChangePassword", token, `{"oldPassword":"wrong-`+pw+`","newPassword":"`+newPw+`"}`)
	post("/karlmalone.v1.MemberService/ChangePassword", token, `{"oldPassword":"`+pw+`","newPassword":"`+newPw+`"}`)
	post("/karlmalone.v1.MemberService/GetMe", other, `{}`) // revoked by the change
	post("/karlmalone.v1.MemberService/Logout", token, `{}`)
	post("/karlmalone.v1.MemberService/GetMe", token, `{}`)

	// The stored hash, which no RPC shows (that is the point).
	m, err := db.New(e.Pool).GetMemberByPhone(t.Context(), phone)
	if err != nil {
		t.Fatal(err)
	}
	hash := m.PasswordHash
	responses, logs := seen.String(), e.Logs.String()
	if !strings.Contains(logs, "procedure=/karlmalone.v1.MemberService/Login") {
		t.Fatalf("the access log is missing; logs:\n%s", logs)
	}
	for name, secret := range map[string]string{
		"password": pw, "new password": newPw, "token": token, "other token": other,
		"hash": hash, "hash prefix": "$argon2id$",
	} {
		if strings.Contains(responses, secret) {
			t.Errorf("a response carries the %s", name)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("the log carries the %s", name)
		}
	}
}

// TestConcurrentRegistrationsOfOnePhone: exactly one wins; the rest get already_exists.
func TestConcurrentRegistrationsOfOnePhone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	phone := newPhone()
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := e.clients("").Members.Register(t.Context(), &v1.RegisterRequest{Phone: phone, Password: "s3cret-pass", Nickname: "racer"})
			errs <- err
		}()
	}
	wins := 0
	for range n {
		err := <-errs
		switch connect.CodeOf(err) {
		case connect.CodeAlreadyExists:
		default:
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			wins++
		}
	}
	if wins != 1 {
		t.Fatalf("%d registrations succeeded, want 1", wins)
	}
	// One member has the phone.
	found, err := e.login(t, phone, "s3cret-pass").Members.SearchMembers(t.Context(), &v1.SearchMembersRequest{Query: phone})
	if err != nil || len(found.GetMembers()) != 1 {
		t.Fatalf("members with the phone: %v, %v; want one", found, err)
	}
}

// TestUnknownJSONFieldsAreIgnored: Connect's JSON codec discards unknown
// fields and enum names so that old servers accept newer clients. Nothing
// unknown may change what is stored.
func TestUnknownJSONFieldsAreIgnored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	phone := newPhone()
	status, body, raw := e.postJSON(t, "/karlmalone.v1.MemberService/Register", "",
		`{"phone":"`+phone+`","password":"s3cret-pass","nickname":"n","isAdmin":true,"id":"999","gender":"GENDER_ROBOT"}`)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, raw)
	}
	m := body["member"].(map[string]any)
	if m["gender"] != nil || m["id"] == "999" {
		t.Fatalf("unknown input changed the member: %v", m)
	}
}

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
