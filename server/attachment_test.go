package server_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// attUploaded is the upload's JSON answer, decoded loosely so the test sees
// the wire types (the id must be a string).
type attUploaded struct {
	ID          string `json:"id"`
	Size        int64  `json:"size"`
	ContentType string `json:"contentType"`
	SHA256      string `json:"sha256"`
}

type attError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// attBytes returns n reproducible random bytes after prefix.
func attBytes(prefix string, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(n)}).Read(b)
	copy(b, prefix)
	return b
}

// pngHeader makes content sniff as image/png.
const pngHeader = "\x89PNG\x0D\x0A\x1A\x0A"

func attDo(t testing.TB, hc *http.Client, method, url, token string, body io.Reader, hdr http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// attUpload posts body raw with contentType and expects 201.
func attUpload(t testing.TB, e *env, c *client, contentType string, body []byte) attUploaded {
	t.Helper()
	res := attDo(t, e.H1, "POST", e.URL+"/v1/attachments", c.Token, bytes.NewReader(body), http.Header{"Content-Type": {contentType}})
	return attCreated(t, res)
}

func attCreated(t testing.TB, res *http.Response) attUploaded {
	t.Helper()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %s: %s", res.Status, b)
	}
	var up attUploaded
	if err := json.Unmarshal(b, &up); err != nil {
		t.Fatalf("upload answer %s: %v", b, err)
	}
	if res.Header.Get("Location") != "/v1/attachments/"+up.ID {
		t.Fatalf("Location %q for id %s", res.Header.Get("Location"), up.ID)
	}
	return up
}

// attGet downloads id as c and returns the response with its body read.
func attGet(t testing.TB, e *env, token, id string, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	res := attDo(t, e.H1, "GET", e.URL+"/v1/attachments/"+id, token, nil, hdr)
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read download: %v", err)
	}
	return res, b
}

func attWantError(t testing.TB, res *http.Response, body []byte, status int, code string) attError {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("got %s (%s), want %d", res.Status, body, status)
	}
	var ae attError
	if err := json.Unmarshal(body, &ae); err != nil || ae.Code != code || ae.Message == "" {
		t.Fatalf("error body %s, want code %q and a message", body, code)
	}
	return ae
}

// attSend sends attachment id from `from` to contact `to` and returns the message.
func attSend(t testing.TB, from, to *client, id string) *v1.Message {
	t.Helper()
	res, err := from.Chat.SendMessage(t.Context(), &v1.SendMessageRequest{
		Target:      &v1.SendMessageRequest_PeerId{PeerId: to.ID},
		ClientMsgId: "att-" + id,
		Content: &v1.SendMessageRequest_Attachment{Attachment: &v1.Attachment{
			Id: attID(t, attUploaded{ID: id}), Kind: v1.AttachmentKind_ATTACHMENT_KIND_IMAGE,
		}},
	})
	if err != nil {
		t.Fatalf("send attachment %s: %v", id, err)
	}
	return res.GetMessage()
}

// attStored lists the files in the server's attachment store.
func attStored(t testing.TB, e *env) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(e.AttachmentDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, strings.TrimPrefix(p, e.AttachmentDir))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// attRows counts the stored attachment rows: what a failed upload must not
// leave behind.
func attRows(t testing.TB, e *env) int {
	t.Helper()
	return len(e.dbRows(t, "attachments", "true"))
}

// attID is the upload's id as the int64 messages carry.
func attID(t testing.TB, up attUploaded) int64 {
	t.Helper()
	id, err := strconv.ParseInt(up.ID, 10, 64)
	if err != nil {
		t.Fatalf("upload id %q: %v", up.ID, err)
	}
	return id
}

func TestAttachmentUploadSendDownload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann, bob, eve := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "eve")
	makeContacts(t, ann, bob)
	content := attBytes(pngHeader, 300_000)
	sum := sha256.Sum256(content)
	hexSum := hex.EncodeToString(sum[:])
	var up attUploaded

	step(t, "an upload is stored under its sha256", func(t *testing.T) {
		up = attUpload(t, e, ann, "image/png", content)
		wantProto(t, "upload answer", attUploaded{ID: up.ID, Size: int64(len(content)), ContentType: "image/png", SHA256: hexSum}, up)
		wantProto(t, "stored files", []string{"/" + hexSum[:2] + "/" + hexSum}, attStored(t, e))
	})

	step(t, "before it is sent only the uploader may read it", func(t *testing.T) {
		if res, b := attGet(t, e, ann.Token, up.ID, nil); res.StatusCode != 200 || !bytes.Equal(b, content) {
			t.Fatalf("uploader download: %s", res.Status)
		}
		res, b := attGet(t, e, bob.Token, up.ID, nil)
		attWantError(t, res, b, 404, "not_found")
	})

	step(t, "once sent the recipient downloads it", func(t *testing.T) {
		m := attSend(t, ann, bob, up.ID)
		wantProto(t, "message attachment", &v1.Attachment{
			Id: attID(t, up), Kind: v1.AttachmentKind_ATTACHMENT_KIND_IMAGE, ContentType: "image/png", Size: int64(len(content)),
		}, m.GetAttachment())
		res, b := attGet(t, e, bob.Token, up.ID, nil)
		if res.StatusCode != 200 {
			t.Fatalf("recipient download: %s: %s", res.Status, b)
		}
		if got := sha256.Sum256(b); got != sum {
			t.Fatal("recipient got different bytes")
		}
		for k, want := range map[string]string{
			"Content-Type":           "image/png",
			"Content-Length":         fmt.Sprint(len(content)),
			"Etag":                   `"` + hexSum + `"`,
			"Accept-Ranges":          "bytes",
			"X-Content-Type-Options": "nosniff",
		} {
			if got := res.Header.Get(k); got != want {
				t.Errorf("%s: %q, want %q", k, got, want)
			}
		}
		if !strings.Contains(res.Header.Get("Content-Security-Policy"), "sandbox") {
			t.Errorf("Content-Security-Policy %q: uploaded content must be sandboxed", res.Header.Get("Content-Security-Policy"))
		}
		// A cached copy revalidates with the ETag.
		res, _ = attGet(t, e, bob.Token, up.ID, http.Header{"If-None-Match": {`"` + hexSum + `"`}})
		if res.StatusCode != http.StatusNotModified {
			t.Fatalf("If-None-Match: %s, want 304", res.Status)
		}
	})

	step(t, "a stranger, unknown ids and malformed ids all look the same", func(t *testing.T) {
		for _, tc := range []struct{ who, id string }{
			{eve.Token, up.ID}, {bob.Token, "999999999"}, {bob.Token, "abc"}, {bob.Token, "-1"},
		} {
			res, b := attGet(t, e, tc.who, tc.id, nil)
			attWantError(t, res, b, 404, "not_found")
		}
	})

	step(t, "no token or a bad one is told the scheme to use", func(t *testing.T) {
		for _, token := range []string{"", "not-a-token"} {
			res, b := attGet(t, e, token, up.ID, nil)
			attWantError(t, res, b, 401, "unauthenticated")
			if !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("WWW-Authenticate %q", res.Header.Get("WWW-Authenticate"))
			}
			res = attDo(t, e.H1, "POST", e.URL+"/v1/attachments", token, strings.NewReader("hi"), nil)
			b, _ = io.ReadAll(res.Body)
			attWantError(t, res, b, 401, "unauthenticated")
		}
	})

	step(t, "the same bytes uploaded again are a second upload of one file", func(t *testing.T) {
		up2 := attUpload(t, e, bob, "image/png", content)
		if up2.ID == up.ID || up2.SHA256 != up.SHA256 {
			t.Fatalf("second upload %+v, first %+v", up2, up)
		}
		if got := attStored(t, e); len(got) != 1 {
			t.Fatalf("stored files %v, want one", got)
		}
		if n := attRows(t, e); n != 2 {
			t.Fatalf("%d rows, want 2", n)
		}
	})
}

func TestAttachmentRange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann := e.register(t, "ann")
	content := attBytes("", 100_000)
	up := attUpload(t, e, ann, "application/octet-stream", content)

	for _, tc := range []struct {
		rng        string
		from, to   int // inclusive
		contentRng string
	}{
		{"bytes=1000-1999", 1000, 1999, "bytes 1000-1999/100000"},
		{"bytes=-100", 99_900, 99_999, "bytes 99900-99999/100000"},
		{"bytes=99000-", 99_000, 99_999, "bytes 99000-99999/100000"},
	} {
		res, b := attGet(t, e, ann.Token, up.ID, http.Header{"Range": {tc.rng}})
		if res.StatusCode != http.StatusPartialContent {
			t.Fatalf("Range %s: %s, want 206", tc.rng, res.Status)
		}
		if res.Header.Get("Content-Range") != tc.contentRng {
			t.Fatalf("Range %s: Content-Range %q, want %q", tc.rng, res.Header.Get("Content-Range"), tc.contentRng)
		}
		if !bytes.Equal(b, content[tc.from:tc.to+1]) {
			t.Fatalf("Range %s: wrong bytes", tc.rng)
		}
	}
	res, _ := attGet(t, e, ann.Token, up.ID, http.Header{"Range": {"bytes=200000-"}})
	if res.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %s, want 416", res.Status)
	}
}

func TestAttachmentTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann := e.register(t, "ann")
	limit := int(server.DefaultConfig().MaxAttachmentBytes) // a whole number of MiB
	big := attBytes(pngHeader, limit+1<<20)

	check := func(name string, res *http.Response) {
		t.Helper()
		b, _ := io.ReadAll(res.Body)
		ae := attWantError(t, res, b, http.StatusRequestEntityTooLarge, "resource_exhausted")
		if !strings.Contains(ae.Message, fmt.Sprintf("%d MiB", limit>>20)) {
			t.Fatalf("%s: message %q does not name the limit", name, ae.Message)
		}
		if n := attRows(t, e); n != 0 {
			t.Fatalf("%s: %d rows, want none", name, n)
		}
		if got := attStored(t, e); len(got) != 0 {
			t.Fatalf("%s: files %v left behind", name, got)
		}
	}
	// HTTP/2 lets the server answer before the body is all sent without the
	// client losing the answer to a reset connection.
	// With a Content-Length: refused before reading.
	check("sized", attDo(t, e.H2C, "POST", e.URL+"/v1/attachments", ann.Token, bytes.NewReader(big),
		http.Header{"Content-Type": {"image/png"}}))
	// Streamed without a length: refused once the limit is passed.
	check("streamed", attDo(t, e.H2C, "POST", e.URL+"/v1/attachments", ann.Token, io.MultiReader(bytes.NewReader(big)),
		http.Header{"Content-Type": {"image/png"}}))
	// A multipart file past the limit.
	body, ctype := attMultipart(t, map[string][]byte{"photo.png": big}, nil)
	check("multipart", attDo(t, e.H2C, "POST", e.URL+"/v1/attachments", ann.Token, io.MultiReader(body),
		http.Header{"Content-Type": {ctype}}))
	// HTTP/1.1 with Expect: 100-continue, as curl sends for large bodies:
	// the client never sends the body at all.
	h1 := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
	t.Cleanup(h1.CloseIdleConnections)
	check("expect-continue", attDo(t, h1, "POST", e.URL+"/v1/attachments", ann.Token, bytes.NewReader(big),
		http.Header{"Content-Type": {"image/png"}, "Expect": {"100-continue"}}))

	// Exactly the limit is fine.
	up := attUpload(t, e, ann, "image/png", big[:limit])
	if up.Size != int64(limit) {
		t.Fatalf("size %d", up.Size)
	}
}

// attMultipart builds a multipart/form-data body with the given file parts
// (name → content) and plain fields.
func attMultipart(t testing.TB, files map[string][]byte, fields map[string]string) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for k, v := range fields {
		w.WriteField(k, v)
	}
	for name, content := range files {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, name))
		h.Set("Content-Type", "application/octet-stream")
		p, err := w.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		p.Write(content)
	}
	w.Close()
	return &buf, w.FormDataContentType()
}

func TestAttachmentMultipart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann := e.register(t, "ann")
	content := attBytes(pngHeader, 70_000)
	body, ctype := attMultipart(t, map[string][]byte{"photo.png": content}, map[string]string{"note": "ignored"})
	res := attDo(t, e.H1, "POST", e.URL+"/v1/attachments", ann.Token, body, http.Header{"Content-Type": {ctype}})
	up := attCreated(t, res)
	// The part declared octet-stream; the bytes say PNG.
	wantProto(t, "multipart upload", attUploaded{ID: up.ID, Size: int64(len(content)), ContentType: "image/png", SHA256: up.SHA256}, up)
	if res, b := attGet(t, e, ann.Token, up.ID, nil); res.StatusCode != 200 || !bytes.Equal(b, content) {
		t.Fatalf("download of a multipart upload: %s", res.Status)
	}

	for name, files := range map[string]map[string][]byte{
		"two files": {"a.png": content, "b.png": content},
		"no file":   {},
		"empty":     {"empty.bin": {}},
	} {
		body, ctype := attMultipart(t, files, map[string]string{"note": "x"})
		res := attDo(t, e.H1, "POST", e.URL+"/v1/attachments", ann.Token, body, http.Header{"Content-Type": {ctype}})
		b, _ := io.ReadAll(res.Body)
		attWantError(t, res, b, 400, "invalid_argument")
		if n := attRows(t, e); n != 1 {
			t.Fatalf("%s: %d rows, want 1", name, n)
		}
		if got := attStored(t, e); len(got) != 1 {
			t.Fatalf("%s: files %v, want the first upload only", name, got)
		}
	}
}

func TestAttachmentContentType(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann := e.register(t, "ann")
	opaque := attBytes("\x00\x01\x02#!AMR", 2000) // nothing DetectContentType knows
	for _, tc := range []struct {
		name, declared string
		body           []byte
		want           string
	}{
		{"sniffed wins over declared", "image/jpeg", attBytes(pngHeader, 2000), "image/png"},
		{"declared fills in for unknown bytes", "audio/amr", opaque, "audio/amr"},
		{"declared parameters dropped", "audio/amr; rate=8000", opaque, "audio/amr"},
		{"never declared HTML", "text/html", opaque, "application/octet-stream"},
		{"never declared SVG", "image/svg+xml", opaque, "application/octet-stream"},
		{"never declared script", "application/javascript", opaque, "application/octet-stream"},
		{"nothing declared", "", opaque, "application/octet-stream"},
		{"text", "application/octet-stream", []byte("hello, world"), "text/plain; charset=utf-8"},
		{"three bytes", "", []byte("\x00\x01\x02"), "application/octet-stream"},
	} {
		hdr := http.Header{}
		if tc.declared != "" {
			hdr.Set("Content-Type", tc.declared)
		}
		res := attDo(t, e.H1, "POST", e.URL+"/v1/attachments", ann.Token, bytes.NewReader(tc.body), hdr)
		up := attCreated(t, res)
		if up.ContentType != tc.want {
			t.Errorf("%s: stored %q, want %q", tc.name, up.ContentType, tc.want)
		}
		if res, _ := attGet(t, e, ann.Token, up.ID, nil); res.Header.Get("Content-Type") != tc.want {
			t.Errorf("%s: served as %q, want %q", tc.name, res.Header.Get("Content-Type"), tc.want)
		}
	}
	res := attDo(t, e.H1, "POST", e.URL+"/v1/attachments", ann.Token, http.NoBody, http.Header{"Content-Type": {"image/png"}})
	b, _ := io.ReadAll(res.Body)
	attWantError(t, res, b, 400, "invalid_argument")
}

// TestAttachmentInterrupted cuts uploads off mid-body, raw and multipart:
// neither a file nor a row may remain, and the server carries on.
func TestAttachmentInterrupted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann := e.register(t, "ann")
	content := attBytes(pngHeader, 1<<20)
	mp, mpType := attMultipart(t, map[string][]byte{"photo.png": content}, nil)

	for name, tc := range map[string]struct {
		ctype string
		body  []byte
	}{
		"raw":       {"image/png", content},
		"multipart": {mpType, mp.Bytes()},
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriter(conn)
		fmt.Fprintf(w, "POST /v1/attachments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
			ann.Token, tc.ctype, len(tc.body))
		w.Write(tc.body[:len(tc.body)/2])
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		// Wait until the server is writing the upload, then cut it off and
		// wait until the server has cleaned up.
		waitFor(t, name+": upload staged", func() bool { return len(attStored(t, e)) > 0 })
		conn.Close()
		waitFor(t, name+": upload cleaned up", func() bool { return len(attStored(t, e)) == 0 })
		if n := attRows(t, e); n != 0 {
			t.Fatalf("%s: %d rows after a cut-off upload, want none", name, n)
		}
	}
	// The server still takes uploads.
	up := attUpload(t, e, ann, "image/png", content)
	if up.Size != int64(len(content)) {
		t.Fatalf("upload after interruptions: %+v", up)
	}
}
