package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/karlmalone/karlmalone/attachment"
	"github.com/karlmalone/karlmalone/gen/db"
	"github.com/karlmalone/karlmalone/store"
)

// attachmentServer serves the attachment routes, plain HTTP beside the RPCs:
// POST /v1/attachments stores an upload and GET /v1/attachments/{id} serves
// it. The bytes live in an attachment.Store, addressed by their SHA-256; the
// rows go through the store like every other handler's. Callers authenticate
// as for RPCs, and errors go out as Connect errors (connect.ErrorWriter), so
// clients parse one error format for RPCs and attachments alike.
type attachmentServer struct {
	*base
	authn   *Authenticator
	blobs   attachment.Store
	errs    *connect.ErrorWriter
	uploads *keyedLimiter[int64] // per member
}

func newAttachmentServer(b *base, authn *Authenticator, blobs attachment.Store) *attachmentServer {
	return &attachmentServer{base: b, authn: authn, blobs: blobs, errs: connect.NewErrorWriter(),
		uploads: newKeyedLimiter[int64](b.cfg.AttachmentUploadPerMember)}
}

var errUploadRateLimited = connect.NewError(connect.CodeResourceExhausted, errors.New("uploading too fast; slow down and retry"))

// multipartOverhead is what a multipart body may carry beyond the file itself:
// boundaries, part headers and small form fields.
const multipartOverhead = 64 << 10

// sniffLen is how much http.DetectContentType looks at.
const sniffLen = 512

var errAttachmentNotFound = connect.NewError(connect.CodeNotFound, errors.New("attachment not found"))

// uploaded is the JSON answer to an upload. The id is a string, as protojson
// writes int64 fields, so JavaScript clients keep every digit.
type uploaded struct {
	ID          int64  `json:"id,string"`
	Size        int64  `json:"size"`
	ContentType string `json:"contentType"`
	SHA256      string `json:"sha256"`
}

// upload stores the request body, either raw (any Content-Type) or the one
// file of a multipart/form-data body, and answers 201 with uploaded.
func (s *attachmentServer) upload(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	start := time.Now()
	caller, err := s.authn.AuthenticateRequest(r)
	if err != nil {
		s.fail(w, r, "authenticate", err)
		return
	}
	if !s.uploads.allow(caller.MemberID, s.now()) {
		s.fail(w, r, "upload", errUploadRateLimited)
		return
	}
	media, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	isMultipart := media == "multipart/form-data"
	bodyLimit := s.cfg.MaxAttachmentBytes
	if isMultipart {
		bodyLimit += multipartOverhead
	}
	if r.ContentLength > bodyLimit {
		// Refuse before reading a byte; the server closes the connection
		// rather than drain the body.
		s.fail(w, r, "upload", s.tooLarge())
		return
	}
	// A progress-based deadline (transport.go), not the RPCs' fixed one: a
	// large file on a slow line takes minutes, a stalled one is cut off.
	r.Body = newProgressBody(w, r, s.cfg.AttachmentReadIdle, s.cfg.AttachmentReadTimeout)
	r.Body = http.MaxBytesReader(w, r.Body, bodyLimit)

	var staged attachment.Staged
	var contentType string
	if isMultipart {
		staged, contentType, err = s.stageMultipart(r.Body, params["boundary"])
	} else {
		staged, contentType, err = s.stage(r.Body, r.Header.Get("Content-Type"))
	}
	if err != nil {
		s.fail(w, r, "upload", err)
		return
	}
	defer staged.Discard()
	blob := staged.Blob()

	// Publish the file inside the transaction that records it: if the insert
	// fails there is no file, and if publishing fails there is no row. (Should
	// the commit itself fail, the published file is content nobody names;
	// harmless, and any later upload of the same bytes reuses it.) The
	// uploader's lock makes the quota exact; the content's keeps garbage
	// collection from removing a file this upload found already stored.
	var row db.Attachment
	err = s.store.InTx(ctx, func(q *db.Queries) error {
		if err := q.LockAttachmentUploader(ctx, caller.MemberID); err != nil {
			return fmt.Errorf("lock uploader: %w", err)
		}
		used, err := q.AttachmentBytesByUploader(ctx, caller.MemberID)
		if err != nil {
			return fmt.Errorf("attachment bytes: %w", err)
		}
		if used+blob.Size > s.cfg.AttachmentQuotaBytes {
			return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
				"attachment quota exceeded: %s of %s used; attachments never sent are removed after %s",
				formatBytes(used), formatBytes(s.cfg.AttachmentQuotaBytes), s.cfg.AttachmentGCGrace))
		}
		if err := q.LockAttachmentContent(ctx, blob.Sum[:]); err != nil {
			return fmt.Errorf("lock content: %w", err)
		}
		row, err = q.CreateAttachment(ctx, db.CreateAttachmentParams{
			UploaderID: caller.MemberID, Sha256: blob.Sum[:], Size: blob.Size, ContentType: contentType,
		})
		if err != nil {
			return fmt.Errorf("create attachment: %w", err)
		}
		return staged.Commit()
	})
	if err != nil {
		s.fail(w, r, "upload", err)
		return
	}
	s.log.InfoContext(ctx, "attachment uploaded", "id", row.ID, "member_id", caller.MemberID,
		"size", row.Size, "content_type", row.ContentType, "duration", time.Since(start))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/v1/attachments/"+strconv.FormatInt(row.ID, 10))
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(uploaded{
		ID: row.ID, Size: row.Size, ContentType: row.ContentType, SHA256: blob.Sum.String(),
	})
}

// stageMultipart stages the one file part of a multipart body. Parts without
// a file name (plain form fields) are skipped; a second file is refused.
func (s *attachmentServer) stageMultipart(body io.Reader, boundary string) (attachment.Staged, string, error) {
	if boundary == "" {
		return nil, "", invalid("multipart body without a boundary")
	}
	mr := multipart.NewReader(body, boundary)
	var staged attachment.Staged
	var contentType string
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return discard(staged, s.readError(err, "read multipart body"))
		}
		if part.FileName() == "" {
			if _, err := io.Copy(io.Discard, part); err != nil {
				return discard(staged, s.readError(err, "read multipart body"))
			}
			continue
		}
		if staged != nil {
			return discard(staged, invalid("multipart body with more than one file; send exactly one"))
		}
		staged, contentType, err = s.stage(part, part.Header.Get("Content-Type"))
		if err != nil {
			return nil, "", err
		}
	}
	if staged == nil {
		return nil, "", invalid("multipart body without a file part; send exactly one")
	}
	return staged, contentType, nil
}

func discard(s attachment.Staged, err error) (attachment.Staged, string, error) {
	if s != nil {
		s.Discard()
	}
	return nil, "", err
}

// stage sniffs the content type from the first bytes and streams the rest to
// the blob store; only sniffLen bytes are ever held in memory.
func (s *attachmentServer) stage(src io.Reader, declared string) (attachment.Staged, string, error) {
	head := make([]byte, sniffLen)
	n, err := io.ReadFull(src, head)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, "", s.readError(err, "read upload")
	}
	head = head[:n]
	if n == 0 {
		return nil, "", invalid("empty upload")
	}
	rec := &recordingReader{r: io.MultiReader(bytes.NewReader(head), src)}
	staged, err := s.blobs.Stage(rec, s.cfg.MaxAttachmentBytes)
	switch {
	case errors.Is(err, attachment.ErrTooLarge):
		return nil, "", s.tooLarge()
	case err != nil && rec.err != nil:
		return nil, "", s.readError(rec.err, "read upload")
	case err != nil:
		return nil, "", fmt.Errorf("stage upload: %w", err)
	}
	return staged, contentType(head, declared), nil
}

// recordingReader remembers the error of the reader it wraps, so a failed
// Stage can be blamed on the client (body cut off) or on the store (disk).
type recordingReader struct {
	r   io.Reader
	err error
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		rr.err = err
	}
	return n, err
}

// readError classifies a failure to read the request body.
func (s *attachmentServer) readError(err error, what string) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return s.tooLarge()
	}
	// The client broke off or sent a malformed body; it will most likely
	// never read this answer, but a client that can gets a 400.
	return invalid("%s: %v", what, err)
}

// errTooLarge marks the one error answered with a status of its own: 413,
// which no Connect code maps to.
var errTooLarge = errors.New("attachment too large")

func (s *attachmentServer) tooLarge() error {
	return connect.NewError(connect.CodeResourceExhausted,
		fmt.Errorf("%w: the limit is %s", errTooLarge, formatBytes(s.cfg.MaxAttachmentBytes)))
}

// contentType decides the stored type. The sniffed type wins: it is what the
// bytes are, whatever the client says. A declared type is used only when
// sniffing finds nothing (application/octet-stream) and the declared type is
// one a browser will not run as a document or script (no HTML, XML, SVG,
// JavaScript or other text/*): so voice formats like audio/amr keep their
// type, and no upload can become active content on the API's origin.
func contentType(head []byte, declared string) string {
	sniffed := http.DetectContentType(head)
	if sniffed != "application/octet-stream" || declared == "" {
		return sniffed
	}
	media, _, err := mime.ParseMediaType(declared)
	if err != nil || !strings.Contains(media, "/") || media == "multipart/form-data" {
		return sniffed
	}
	for _, active := range []string{"text/", "html", "xml", "svg", "javascript", "ecmascript"} {
		if strings.Contains(media, active) {
			return sniffed
		}
	}
	return media
}

// download streams an attachment to its uploader and to members of any
// conversation where it was sent. Everyone else, and unknown or malformed
// ids, get 404: nobody learns which ids exist.
func (s *attachmentServer) download(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	memberID, err := s.downloader(r) // a bearer token or a signed URL (attachment_url.go)
	if err != nil {
		s.fail(w, r, "authenticate", err)
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.fail(w, r, "download", errAttachmentNotFound)
		return
	}
	allowed, err := s.q.CanReadAttachment(ctx, db.CanReadAttachmentParams{AttachmentID: id, MemberID: memberID})
	if err != nil {
		s.fail(w, r, "download", fmt.Errorf("can read attachment: %w", err))
		return
	}
	if allowed == nil || !*allowed {
		s.fail(w, r, "download", errAttachmentNotFound)
		return
	}
	row, err := s.q.GetAttachmentByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		s.fail(w, r, "download", errAttachmentNotFound)
		return
	}
	if err != nil {
		s.fail(w, r, "download", fmt.Errorf("get attachment: %w", err))
		return
	}
	sum, err := attachment.SumOf(row.Sha256)
	if err != nil {
		s.fail(w, r, "download", fmt.Errorf("attachment %d: %w", id, err))
		return
	}
	f, err := s.blobs.Open(sum)
	if err != nil {
		// A row always has its file (see upload): this is lost data.
		s.fail(w, r, "download", fmt.Errorf("attachment %d: %w", id, err))
		return
	}
	defer f.Close()

	hd := w.Header()
	hd.Set("Content-Type", row.ContentType)
	hd.Set("Content-Disposition", contentDisposition(row.ContentType))
	hd.Set("ETag", `"`+sum.String()+`"`)
	// The bytes under an id never change; only the members who may fetch
	// them do, and a device that already has them keeps them anyway.
	hd.Set("Cache-Control", "private, max-age=31536000, immutable")
	// Uploaded content must never run on the API's origin.
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	// ServeContent answers Range (206), If-Range, If-None-Match (304), HEAD,
	// and sets Content-Length and Last-Modified.
	http.ServeContent(w, r, "", row.CreatedAt, f)
}

// fail answers err as a Connect error, mapped by toConnectError like an RPC's
// ({"code": "not_found", "message": "…"} and the code's HTTP status).
func (s *attachmentServer) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	cerr, ok := errors.AsType[*connect.Error](toConnectError(r.Context(), s.log, "attachment "+op, err))
	if !ok {
		return // the client is gone (toConnectError passes its context's end through)
	}
	if cerr.Code() == connect.CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="karlmalone"`)
	}
	if errors.Is(err, errTooLarge) {
		w = statusWriter{w, http.StatusRequestEntityTooLarge}
	}
	s.errs.Write(w, r, cerr)
}

// statusWriter writes its own status in place of the one it is given.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w statusWriter) WriteHeader(int) { w.ResponseWriter.WriteHeader(w.status) }

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
