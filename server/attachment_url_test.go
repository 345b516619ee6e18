package server_test

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// testClock is a clock the test moves forward.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// signedURL asks c for a signed URL of attachment id.
func signedURL(t testing.TB, c *client, id int64) (string, time.Time) {
	t.Helper()
	res, err := c.Chat.GetAttachmentUrl(t.Context(), &v1.GetAttachmentUrlRequest{AttachmentId: id})
	if err != nil {
		t.Fatalf("GetAttachmentUrl %d: %v", id, err)
	}
	return res.GetUrl(), res.GetExpiresAt().AsTime()
}

// getSigned downloads a signed URL with no Authorization header, as <img> does.
func getSigned(t testing.TB, e *env, path string) (*http.Response, []byte) {
	t.Helper()
	res, b := attGet(t, e, "", strings.TrimPrefix(path, "/v1/attachments/"), nil)
	return res, b
}

// withQuery returns path with one query parameter replaced.
func withQuery(t testing.TB, path, key, value string) string {
	t.Helper()
	u, err := url.Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func TestAttachmentSignedURL(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Now()}
	ttl := server.DefaultConfig().AttachmentURLTTL
	e := newEnv(t, func(d *server.Deps) { d.Now = clock.Now })
	ann, bob, eve := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "eve")
	makeContacts(t, ann, bob)
	img := attBytes(pngHeader, 2000)
	pdf := attBytes("%PDF-1.4\n", 2000)
	imgUp, pdfUp := attUpload(t, e, ann, "image/png", img), attUpload(t, e, ann, "application/pdf", pdf)
	attSend(t, ann, bob, imgUp.ID)
	attSend(t, ann, bob, pdfUp.ID)
	var bobImg string

	step(t, "a signed URL downloads without a bearer header", func(t *testing.T) {
		var exp time.Time
		bobImg, exp = signedURL(t, bob, attID(t, imgUp))
		if !strings.HasPrefix(bobImg, "/v1/attachments/"+imgUp.ID+"?") {
			t.Fatalf("url %q", bobImg)
		}
		if want := clock.Now().Add(ttl).Truncate(time.Second); !exp.Equal(want) {
			t.Fatalf("expires at %v, want %v", exp, want)
		}
		res, b := getSigned(t, e, bobImg)
		if res.StatusCode != 200 || string(b) != string(img) {
			t.Fatalf("signed download: %s: %.100q", res.Status, b)
		}
		wantFields(t, "headers", map[string]any{"Content-Type": "image/png", "Content-Disposition": "inline"},
			map[string]any{"Content-Type": res.Header.Get("Content-Type"), "Content-Disposition": res.Header.Get("Content-Disposition")})
	})

	step(t, "anything but media downloads as a file, never inline", func(t *testing.T) {
		u, _ := signedURL(t, bob, attID(t, pdfUp))
		res, b := getSigned(t, e, u)
		if res.StatusCode != 200 || string(b) != string(pdf) {
			t.Fatalf("signed download: %s", res.Status)
		}
		if got := res.Header.Get("Content-Disposition"); got != "attachment" {
			t.Fatalf("Content-Disposition %q, want attachment", got)
		}
		// The same with a bearer token.
		res, _ = attGet(t, e, bob.Token, pdfUp.ID, nil)
		if got := res.Header.Get("Content-Disposition"); res.StatusCode != 200 || got != "attachment" {
			t.Fatalf("bearer download: %s, Content-Disposition %q", res.Status, got)
		}
	})

	step(t, "an altered URL is refused", func(t *testing.T) {
		sig := url.Values{}
		if u, err := url.Parse(bobImg); err == nil {
			sig = u.Query()
		}
		bad := []string{
			withQuery(t, bobImg, "sig", strings.Repeat("A", len(sig.Get("sig")))),      // another signature
			withQuery(t, bobImg, "sig", "not base64!"),                                 // not a signature
			withQuery(t, bobImg, "exp", strconv.FormatInt(clock.Now().Unix()+1e6, 10)), // a later expiry
			withQuery(t, bobImg, "m", strconv.FormatInt(eve.ID, 10)),                   // another member
			strings.Replace(bobImg, "/"+imgUp.ID+"?", "/"+pdfUp.ID+"?", 1),             // another attachment
		}
		for _, u := range bad {
			res, b := getSigned(t, e, u)
			attWantError(t, res, b, 403, "permission_denied")
		}
	})

	step(t, "a URL signed for one member does not serve another's id", func(t *testing.T) {
		// Eve may not read it, so she gets no URL; the URL bob got is bob's
		// alone, and tells the server it is bob who reads.
		_, err := eve.Chat.GetAttachmentUrl(t.Context(), &v1.GetAttachmentUrlRequest{AttachmentId: attID(t, imgUp)})
		wantCode(t, err, connect.CodeNotFound)
		_, err = bob.Chat.GetAttachmentUrl(t.Context(), &v1.GetAttachmentUrlRequest{AttachmentId: 0})
		wantInvalid(t, err, "attachment_id")
	})

	step(t, "an expired URL is refused", func(t *testing.T) {
		clock.Advance(ttl)
		res, b := getSigned(t, e, bobImg)
		ae := attWantError(t, res, b, 403, "permission_denied")
		if !strings.Contains(ae.Message, "expired") {
			t.Fatalf("message %q should say the URL expired", ae.Message)
		}
	})
}

func TestAttachmentSignedURLAccessRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann, bob := e.register(t, "ann"), e.register(t, "bob")
	g := newGroup(t, ann, bob)
	up := attUpload(t, e, ann, "image/png", attBytes(pngHeader, 1000))
	_, err := ann.Chat.SendMessage(t.Context(), &v1.SendMessageRequest{
		Target:      &v1.SendMessageRequest_GroupId{GroupId: g.GetId()},
		ClientMsgId: "img",
		Content:     &v1.SendMessageRequest_Attachment{Attachment: &v1.Attachment{Id: attID(t, up), Kind: v1.AttachmentKind_ATTACHMENT_KIND_IMAGE}},
	})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	u, _ := signedURL(t, bob, attID(t, up))
	if res, _ := getSigned(t, e, u); res.StatusCode != 200 {
		t.Fatalf("download while a member: %s", res.Status)
	}
	if _, err := bob.Groups.LeaveGroup(t.Context(), &v1.LeaveGroupRequest{GroupId: g.GetId()}); err != nil {
		t.Fatalf("leave: %v", err)
	}
	// The URL has not expired, but bob may no longer read the attachment:
	// refused as to any member who may not see it.
	res, b := getSigned(t, e, u)
	attWantError(t, res, b, 404, "not_found")
}

// Every node signs with the same key: one kept in the database by the first
// that starts, unless -attachment-url-key names one.
func TestAttachmentSignedURLSharedKey(t *testing.T) {
	t.Parallel()
	a := newEnv(t)
	sameFiles := withConfig(func(c *server.Config) { c.AttachmentDir = a.AttachmentDir })
	b := newEnv(t, withPool(a.Pool), sameFiles)
	ann := a.register(t, "ann")
	up := attUpload(t, a, ann, "image/png", attBytes(pngHeader, 1000))
	u, _ := signedURL(t, ann, attID(t, up))
	if res, body := getSigned(t, b, u); res.StatusCode != 200 {
		t.Fatalf("a URL signed by node a, on node b: %s: %s", res.Status, body)
	}
	if got := len(a.dbRows(t, "attachment_url_key", "true")); got != 1 {
		t.Fatalf("%d keys stored, want 1", got)
	}

	key := strings.Repeat("k", server.MinAttachmentURLKeyLen)
	c := newEnv(t, withPool(a.Pool), sameFiles, withConfig(func(c *server.Config) { c.AttachmentURLKey = key }))
	res, body := getSigned(t, c, u)
	attWantError(t, res, body, 403, "permission_denied") // signed with the stored key, not this one
	u, _ = signedURL(t, c.clients(ann.Token), attID(t, up))
	if res, body := getSigned(t, c, u); res.StatusCode != 200 {
		t.Fatalf("a URL signed with the configured key: %s: %s", res.Status, body)
	}
}
