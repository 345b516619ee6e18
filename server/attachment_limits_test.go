package server_test

// Attachment limits (docs/SECURITY.md): the per-member quota and upload
// rate, garbage collection of uploads no message carries, downloads of
// non-media as attachments, and upload sniffing against HTML.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/karlmalone/karlmalone/server"
)

// Uploads past a member's quota are refused (resource_exhausted) and store
// nothing; other members are not affected.
func TestAttachmentQuota(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) { c.AttachmentQuotaBytes = 5000 }))
	ann, bob := e.register(t, "ann"), e.register(t, "bob")
	attUpload(t, e, ann, "image/png", attBytes(pngHeader, 3000))
	attUpload(t, e, ann, "image/png", attBytes(pngHeader, 2000)) // exactly the quota
	rows, files := attRows(t, e), attStored(t, e)

	res := attDo(t, e.H1, "POST", e.URL+"/v1/attachments", ann.Token, bytes.NewReader(attBytes(pngHeader, 1)), nil)
	b, _ := io.ReadAll(res.Body)
	if ae := attWantError(t, res, b, http.StatusTooManyRequests, "resource_exhausted"); !strings.Contains(ae.Message, "quota") {
		t.Errorf("over-quota message %q does not name the quota", ae.Message)
	}
	if attRows(t, e) != rows || !slices.Equal(attStored(t, e), files) {
		t.Fatal("a refused upload left a row or a file")
	}
	attUpload(t, e, bob, "image/png", attBytes(pngHeader, 4000))
}

// A member uploading faster than Config.AttachmentUploadPerMember is refused
// until its bucket refills; other members are not affected.
func TestAttachmentUploadRate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) {
		c.AttachmentUploadPerMember = server.RateLimit{Every: time.Hour, Burst: 2}
	}))
	ann, bob := e.register(t, "ann"), e.register(t, "bob")
	attUpload(t, e, ann, "image/png", attBytes(pngHeader, 100))
	attUpload(t, e, ann, "image/png", attBytes(pngHeader, 101))
	res := attDo(t, e.H1, "POST", e.URL+"/v1/attachments", ann.Token, bytes.NewReader(attBytes(pngHeader, 102)), nil)
	b, _ := io.ReadAll(res.Body)
	attWantError(t, res, b, http.StatusTooManyRequests, "resource_exhausted")
	attUpload(t, e, bob, "image/png", attBytes(pngHeader, 103))
}

// collector is the garbage collector of e's server with a grace of an hour,
// running at now plus later.
func collector(e *env, later time.Duration) *server.AttachmentCollector {
	cfg := server.DefaultConfig()
	cfg.AttachmentDir = e.AttachmentDir
	cfg.AttachmentGCGrace = time.Hour
	cfg.AttachmentGCBatch = 2 // several passes in the test below
	now := func() time.Time { return time.Now().Add(later) }
	return server.NewAttachmentCollector(server.Deps{Pool: e.Pool, Config: cfg, Now: now})
}

func fileOf(content []byte) string {
	sum := sha256.Sum256(content)
	h := hex.EncodeToString(sum[:])
	return "/" + h[:2] + "/" + h
}

// Garbage collection removes, after the grace period, the uploads that no
// message carries, and their files once no upload names the content; sent
// attachments, content shared with a sent one, and young uploads stay.
func TestAttachmentGarbageCollection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann, bob := e.register(t, "ann"), e.register(t, "bob")
	makeContacts(t, ann, bob)
	sentBytes, unsentBytes, sharedBytes := attBytes(pngHeader, 1000), attBytes(pngHeader, 1001), attBytes(pngHeader, 1002)

	sent := attUpload(t, e, ann, "image/png", sentBytes)
	attSend(t, ann, bob, sent.ID)
	unsent := attUpload(t, e, ann, "image/png", unsentBytes)
	sharedSent := attUpload(t, e, ann, "image/png", sharedBytes)
	attSend(t, ann, bob, sharedSent.ID)
	sharedUnsent := attUpload(t, e, bob, "image/png", sharedBytes) // same file as sharedSent
	for range 3 {
		attUpload(t, e, bob, "image/png", unsentBytes) // three more rows of the unsent file
	}

	step(t, "within the grace period nothing goes", func(t *testing.T) {
		if rows, files, err := collector(e, 59*time.Minute).Collect(t.Context()); err != nil || rows != 0 || files != 0 {
			t.Fatalf("Collect: %d rows, %d files, %v; want nothing", rows, files, err)
		}
	})

	step(t, "after it, passes of at most a batch remove every unsent row", func(t *testing.T) {
		gc := collector(e, 61*time.Minute)
		total := 0
		for pass := 0; ; pass++ {
			rows, _, err := gc.Collect(t.Context())
			if err != nil {
				t.Fatalf("Collect: %v", err)
			}
			if rows > 2 {
				t.Fatalf("a pass removed %d rows, more than its batch of 2", rows)
			}
			if total += rows; rows == 0 {
				break
			}
		}
		if total != 5 { // unsent, sharedUnsent, three copies of unsent
			t.Fatalf("removed %d rows, want 5", total)
		}
		wantProto(t, "files left", sortedStrings([]string{fileOf(sentBytes), fileOf(sharedBytes)}), sortedStrings(attStored(t, e)))
	})

	step(t, "sent attachments still download; collected ones are gone", func(t *testing.T) {
		for _, id := range []string{sent.ID, sharedSent.ID} {
			if res, _ := attGet(t, e, bob.Token, id, nil); res.StatusCode != http.StatusOK {
				t.Errorf("sent attachment %s: %s", id, res.Status)
			}
		}
		for _, tc := range []struct {
			c  *client
			id string
		}{{ann, unsent.ID}, {bob, sharedUnsent.ID}} {
			res, b := attGet(t, e, tc.c.Token, tc.id, nil)
			attWantError(t, res, b, http.StatusNotFound, "not_found")
		}
	})

	step(t, "collected content uploaded again is stored again", func(t *testing.T) {
		again := attUpload(t, e, ann, "image/png", unsentBytes)
		if res, b := attGet(t, e, ann.Token, again.ID, nil); res.StatusCode != http.StatusOK || !bytes.Equal(b, unsentBytes) {
			t.Fatalf("re-uploaded attachment: %s", res.Status)
		}
	})
}

func sortedStrings(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// Media is served inline; anything else, and above all HTML, is served as a
// download (Content-Disposition: attachment).
func TestAttachmentContentDisposition(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann := e.register(t, "ann")
	for _, tc := range []struct {
		name, declared string
		body           []byte
		inline         bool
	}{
		{"image", "image/png", attBytes(pngHeader, 500), true},
		{"audio by declared type", "audio/amr", attBytes("\x00\x01\x02#!AMR", 500), true},
		{"text", "text/plain", []byte("plain words"), false},
		{"pdf", "application/pdf", []byte("%PDF-1.4\n%binary"), false},
		{"unknown bytes", "", attBytes("\x00\x01\x02", 500), false},
	} {
		up := attUpload(t, e, ann, tc.declared, tc.body)
		res, _ := attGet(t, e, ann.Token, up.ID, nil)
		got := res.Header.Get("Content-Disposition")
		if tc.inline && got != "inline" || !tc.inline && got != "attachment" {
			t.Errorf("%s (%s): Content-Disposition %q, want inline %v", tc.name, up.ContentType, got, tc.inline)
		}
	}
}

// An HTML page declared as an image is stored as what it is (sniffed
// text/html) and served as a download under nosniff: it can neither pass as
// an image nor run as a page on the API's origin. This fails if the sniffing
// is removed (the declared image/png would be stored).
func TestAttachmentHTMLDeclaredAsImage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann := e.register(t, "ann")
	page := []byte("<!DOCTYPE html><html><body><script>fetch('/karlmalone.v1.MemberService/GetMe')</script></body></html>")
	for _, multipart := range []bool{false, true} {
		var res *http.Response
		if multipart {
			body, ctype := attMultipartBody(t, "photo.png", "image/png", page)
			res = attDo(t, e.H1, "POST", e.URL+"/v1/attachments", ann.Token, body, http.Header{"Content-Type": {ctype}})
		} else {
			res = attDo(t, e.H1, "POST", e.URL+"/v1/attachments", ann.Token, bytes.NewReader(page), http.Header{"Content-Type": {"image/png"}})
		}
		up := attCreated(t, res)
		if up.ContentType != "text/html; charset=utf-8" {
			t.Fatalf("multipart %v: HTML declared as image/png stored as %q, want the sniffed text/html", multipart, up.ContentType)
		}
		res, b := attGet(t, e, ann.Token, up.ID, nil)
		if !bytes.Equal(b, page) {
			t.Fatal("served different bytes")
		}
		for k, want := range map[string]string{
			"Content-Type":           "text/html; charset=utf-8",
			"Content-Disposition":    "attachment",
			"X-Content-Type-Options": "nosniff",
		} {
			if got := res.Header.Get(k); got != want {
				t.Errorf("multipart %v: %s %q, want %q", multipart, k, got, want)
			}
		}
	}
}

// attMultipartBody is a multipart/form-data body with one file part.
func attMultipartBody(t testing.TB, name, ctype string, content []byte) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	boundary := "xBOUNDARYx"
	fmt.Fprintf(&buf, "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=%q\r\nContent-Type: %s\r\n\r\n", boundary, name, ctype)
	buf.Write(content)
	fmt.Fprintf(&buf, "\r\n--%s--\r\n", boundary)
	return &buf, "multipart/form-data; boundary=" + boundary
}

// An upload that stops sending is cut off after Config.AttachmentReadIdle,
// leaving no row and no file; one that keeps sending slowly is not, though
// it takes longer than the idle time in all.
func TestAttachmentUploadStalls(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *server.Config) { c.AttachmentReadIdle = 300 * time.Millisecond }))
	ann := e.register(t, "ann")

	conn := rawConn(t, e)
	fmt.Fprintf(conn, "POST /v1/attachments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n%s",
		ann.Token, attBytes(pngHeader, 1000))
	if status := wantCutOff(t, conn, "a stalled upload"); status == http.StatusCreated {
		t.Fatal("a stalled upload was stored")
	}
	if n := attRows(t, e); n != 0 {
		t.Fatalf("a stalled upload left %d rows", n)
	}

	// 12 chunks, 100 ms apart: 1.2 s in all, four times the idle time.
	content := attBytes(pngHeader, 12*1000)
	pr, pw := io.Pipe()
	go func() {
		for i := range 12 {
			if i > 0 {
				<-time.After(100 * time.Millisecond) // the client's pace, not a wait for the server
			}
			if _, err := pw.Write(content[i*1000 : (i+1)*1000]); err != nil {
				return
			}
		}
		pw.Close()
	}()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e.URL+"/v1/attachments", bufio.NewReader(pr))
	req.ContentLength = int64(len(content))
	req.Header.Set("Authorization", "Bearer "+ann.Token)
	req.Header.Set("Content-Type", "image/png")
	res, err := e.H1.Do(req)
	if err != nil {
		t.Fatalf("slow upload: %v", err)
	}
	defer res.Body.Close()
	if up := attCreated(t, res); up.Size != int64(len(content)) {
		t.Fatalf("slow upload stored %d bytes, want %d", up.Size, len(content))
	}
}
