package attachment

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/karlmalone/karlmalone/gen/db"
)

// DefaultMaxBytes is the default upload limit: 20 MiB.
const DefaultMaxBytes = 20 << 20

// multipartOverhead is what a multipart body may carry beyond the file itself:
// boundaries, part headers and small form fields.
const multipartOverhead = 64 << 10

// sniffLen is how much http.DetectContentType looks at.
const sniffLen = 512

// Options are the Handler's dependencies.
type Options struct {
	Store Store
	Pool  *pgxpool.Pool
	// Authenticate returns the member behind a request (its Authorization
	// header). Its errors go through MapError like any other.
	Authenticate func(*http.Request) (memberID int64, err error)
	// MapError turns an error into a *connect.Error (the server's one error
	// mapping: database down → Unavailable, anything unknown → Internal and
	// logged). The code picks the HTTP status.
	MapError func(ctx context.Context, op string, err error) error
	// MaxBytes bounds an upload's content (DefaultMaxBytes when 0).
	MaxBytes int64
	Log      *slog.Logger
}

// Handler serves the attachment routes.
type Handler struct {
	o Options
	q *db.Queries
}

// NewHandler returns the handler; mount Upload at POST /v1/attachments and
// Download at GET /v1/attachments/{id}.
func NewHandler(o Options) *Handler {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MapError == nil {
		o.MapError = func(_ context.Context, _ string, err error) error { return err }
	}
	return &Handler{o: o, q: db.New(o.Pool)}
}

// Uploaded is the JSON answer to an upload. The id is a string, as protojson
// writes int64 fields, so JavaScript clients keep every digit.
type Uploaded struct {
	ID          int64  `json:"id,string"`
	Size        int64  `json:"size"`
	ContentType string `json:"contentType"`
	SHA256      string `json:"sha256"`
}

// Upload stores the request body, either raw (any Content-Type) or the one
// file of a multipart/form-data body, and answers 201 with Uploaded.
func (h *Handler) Upload(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	start := time.Now()
	member, err := h.o.Authenticate(r)
	if err != nil {
		h.fail(w, r, "authenticate", err)
		return
	}
	media, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	isMultipart := media == "multipart/form-data"
	bodyLimit := h.o.MaxBytes
	if isMultipart {
		bodyLimit += multipartOverhead
	}
	if r.ContentLength > bodyLimit {
		// Refuse before reading a byte; the server closes the connection
		// rather than drain the body.
		h.fail(w, r, "upload", h.tooLarge())
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, bodyLimit)

	var staged Staged
	var contentType string
	if isMultipart {
		staged, contentType, err = h.stageMultipart(r.Body, params["boundary"])
	} else {
		staged, contentType, err = h.stage(r.Body, r.Header.Get("Content-Type"))
	}
	if err != nil {
		h.fail(w, r, "upload", err)
		return
	}
	defer staged.Discard()
	blob := staged.Blob()

	// Publish the file inside the transaction that records it: if the insert
	// fails there is no file, and if publishing fails there is no row. (Should
	// the commit itself fail, the published file is content nobody names;
	// harmless, and any later upload of the same bytes reuses it.)
	var row db.Attachment
	err = pgx.BeginFunc(ctx, h.o.Pool, func(tx pgx.Tx) error {
		var err error
		row, err = h.q.WithTx(tx).CreateAttachment(ctx, db.CreateAttachmentParams{
			UploaderID:  member,
			Sha256:      blob.Sum[:],
			Size:        blob.Size,
			ContentType: contentType,
		})
		if err != nil {
			return fmt.Errorf("create attachment: %w", err)
		}
		return staged.Commit()
	})
	if err != nil {
		h.fail(w, r, "upload", err)
		return
	}
	h.o.Log.InfoContext(ctx, "attachment uploaded", "id", row.ID, "member_id", member,
		"size", row.Size, "content_type", row.ContentType, "duration", time.Since(start))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/v1/attachments/"+strconv.FormatInt(row.ID, 10))
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(Uploaded{
		ID: row.ID, Size: row.Size, ContentType: row.ContentType, SHA256: blob.Sum.String(),
	})
}

// stageMultipart stages the one file part of a multipart body. Parts without
// a file name (plain form fields) are skipped; a second file is refused.
func (h *Handler) stageMultipart(body io.Reader, boundary string) (Staged, string, error) {
	if boundary == "" {
		return nil, "", badRequest("multipart body without a boundary")
	}
	mr := multipart.NewReader(body, boundary)
	var staged Staged
	var contentType string
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return discard(staged, h.readError(err, "read multipart body"))
		}
		if part.FileName() == "" {
			if _, err := io.Copy(io.Discard, part); err != nil {
				return discard(staged, h.readError(err, "read multipart body"))
			}
			continue
		}
		if staged != nil {
			return discard(staged, badRequest("multipart body with more than one file; send exactly one"))
		}
		staged, contentType, err = h.stage(part, part.Header.Get("Content-Type"))
		if err != nil {
			return nil, "", err
		}
	}
	if staged == nil {
		return nil, "", badRequest("multipart body without a file part; send exactly one")
	}
	return staged, contentType, nil
}

func discard(s Staged, err error) (Staged, string, error) {
	if s != nil {
		s.Discard()
	}
	return nil, "", err
}

// stage sniffs the content type from the first bytes and streams the rest to
// the store; only sniffLen bytes are ever held in memory.
func (h *Handler) stage(src io.Reader, declared string) (Staged, string, error) {
	head := make([]byte, sniffLen)
	n, err := io.ReadFull(src, head)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, "", h.readError(err, "read upload")
	}
	head = head[:n]
	if n == 0 {
		return nil, "", badRequest("empty upload")
	}
	rec := &recordingReader{r: io.MultiReader(bytes.NewReader(head), src)}
	staged, err := h.o.Store.Stage(rec, h.o.MaxBytes)
	switch {
	case errors.Is(err, ErrTooLarge):
		return nil, "", h.tooLarge()
	case err != nil && rec.err != nil:
		return nil, "", h.readError(rec.err, "read upload")
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
func (h *Handler) readError(err error, what string) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return h.tooLarge()
	}
	// The client broke off or sent a malformed body; it will most likely
	// never read this answer, but a client that can gets a 400.
	return badRequest(fmt.Sprintf("%s: %v", what, err))
}

func (h *Handler) tooLarge() error {
	return &httpError{
		status: http.StatusRequestEntityTooLarge,
		code:   connect.CodeResourceExhausted,
		msg:    fmt.Sprintf("attachment too large: the limit is %s", formatBytes(h.o.MaxBytes)),
	}
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

// Download streams an attachment to its uploader and to members of any
// conversation where it was sent. Everyone else, and unknown or malformed
// ids, get 404: nobody learns which ids exist.
func (h *Handler) Download(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	member, err := h.o.Authenticate(r)
	if err != nil {
		h.fail(w, r, "authenticate", err)
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		h.fail(w, r, "download", errNotFound)
		return
	}
	allowed, err := h.q.CanReadAttachment(ctx, db.CanReadAttachmentParams{AttachmentID: id, MemberID: member})
	if err != nil {
		h.fail(w, r, "download", fmt.Errorf("can read attachment: %w", err))
		return
	}
	if allowed == nil || !*allowed {
		h.fail(w, r, "download", errNotFound)
		return
	}
	row, err := h.q.GetAttachmentByID(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		h.fail(w, r, "download", errNotFound)
		return
	}
	if err != nil {
		h.fail(w, r, "download", fmt.Errorf("get attachment: %w", err))
		return
	}
	sum, err := SumOf(row.Sha256)
	if err != nil {
		h.fail(w, r, "download", fmt.Errorf("attachment %d: %w", id, err))
		return
	}
	f, err := h.o.Store.Open(sum)
	if err != nil {
		// A row always has its file (see Upload): this is lost data.
		h.fail(w, r, "download", fmt.Errorf("attachment %d: %w", id, err))
		return
	}
	defer f.Close()

	hd := w.Header()
	hd.Set("Content-Type", row.ContentType)
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

// Errors answered as they are.
var errNotFound = &httpError{status: http.StatusNotFound, code: connect.CodeNotFound, msg: "attachment not found"}

func badRequest(msg string) error {
	return &httpError{status: http.StatusBadRequest, code: connect.CodeInvalidArgument, msg: msg}
}

// httpError is an answer with an explicit HTTP status (413 has no Connect code
// of its own).
type httpError struct {
	status int
	code   connect.Code
	msg    string
}

func (e *httpError) Error() string { return e.msg }

// fail answers err as JSON in the shape of a Connect error,
// {"code": "not_found", "message": "…"}, so clients parse one error format
// for RPCs and attachments alike.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	status, code, msg := http.StatusInternalServerError, connect.CodeInternal, "internal error"
	if he, ok := errors.AsType[*httpError](err); ok {
		status, code, msg = he.status, he.code, he.msg
	} else {
		mapped := h.o.MapError(r.Context(), "attachment "+op, err)
		if ce, ok := errors.AsType[*connect.Error](mapped); ok {
			code, msg = ce.Code(), ce.Message()
			status = httpStatus(code)
		} else if r.Context().Err() != nil {
			return // the client is gone
		}
	}
	if code == connect.CodeUnauthenticated {
		w.Header().Set("WWW-Authenticate", `Bearer realm="karlmalone"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{code.String(), msg})
}

// httpStatus is the Connect protocol's mapping of codes to HTTP statuses.
func httpStatus(c connect.Code) int {
	switch c {
	case connect.CodeCanceled:
		return 499
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	default:
		return http.StatusInternalServerError
	}
}

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
