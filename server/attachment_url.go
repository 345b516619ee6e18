package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/store"
)

// Signed attachment URLs: <img src> and plain links cannot send a bearer
// header, so ChatService.GetAttachmentUrl hands out
//
//	/v1/attachments/{id}?m=<member>&exp=<unix seconds>&sig=<base64url>
//
// where sig is HMAC-SHA256 over the id, the member and the expiry. The URL
// stands in for that member's token until exp, and no longer than the member
// may read the attachment: download checks CanReadAttachment for the signed
// member on every request, as it does for a bearer.
//
// The URL is issued by an RPC, not carried on every listed or pushed
// message: a pushed event is one frame encoded once for all its recipients
// (push/conn.go), so it cannot carry a per-reader signature, and a URL stored
// with a message in a client's cache would expire there. The SDK caches each
// URL until shortly before it expires, so a conversation costs one call per
// image shown, not one per render.

// MinAttachmentURLKeyLen is the shortest -attachment-url-key accepted: the
// key of an HMAC-SHA256 should be as long as its output.
const MinAttachmentURLKeyLen = 32

// attachmentURLs signs and checks download URLs.
type attachmentURLs struct {
	q   *db.Queries
	ttl time.Duration
	now func() time.Time

	mu  sync.Mutex
	key []byte // Config.AttachmentURLKey, or the database's once read
}

func newAttachmentURLs(q *db.Queries, cfg Config, now func() time.Time) *attachmentURLs {
	u := &attachmentURLs{q: q, ttl: cfg.AttachmentURLTTL, now: now}
	if cfg.AttachmentURLKey != "" {
		u.key = []byte(cfg.AttachmentURLKey)
	}
	return u
}

// LoadAttachmentURLKey returns the key stored in the database, storing a new
// random one first when there is none. The command calls it at start when
// -attachment-url-key is not set, so every node signs with the first node's
// key.
func LoadAttachmentURLKey(ctx context.Context, pool *pgxpool.Pool) (string, error) {
	key, err := ensureAttachmentURLKey(ctx, store.New(pool).Queries())
	return string(key), err
}

func ensureAttachmentURLKey(ctx context.Context, q *db.Queries) ([]byte, error) {
	fresh := make([]byte, MinAttachmentURLKeyLen)
	rand.Read(fresh) // never fails (crypto/rand)
	// Two nodes starting at once: the loser's statement may neither insert
	// nor see the winner's row (its snapshot predates the commit); the
	// second try sees it.
	for range 2 {
		key, err := q.EnsureAttachmentURLKey(ctx, fresh)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("attachment URL key: %w", err)
		}
		return key, nil
	}
	return nil, errors.New("attachment URL key: none stored and none inserted")
}

// signingKey is the configured key or, without one, the database's, read on
// first use (servers built without the command's start-up read: tests).
func (u *attachmentURLs) signingKey(ctx context.Context) ([]byte, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.key == nil {
		key, err := ensureAttachmentURLKey(ctx, u.q)
		if err != nil {
			return nil, err
		}
		u.key = key
	}
	return u.key, nil
}

// mac is the signature of one URL: the fields are decimal and separated by a
// byte that cannot occur in them, so no two URLs sign the same bytes.
func mac(key []byte, id string, member, exp int64) []byte {
	h := hmac.New(sha256.New, key)
	fmt.Fprintf(h, "karlmalone.attachment.v1\x00%s\x00%d\x00%d", id, member, exp)
	return h.Sum(nil)
}

// sign returns the signed path for member to download attachment id.
func (u *attachmentURLs) sign(ctx context.Context, id, member int64) (string, time.Time, error) {
	key, err := u.signingKey(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	// Whole seconds: the URL carries Unix seconds.
	exp := u.now().Add(u.ttl).Truncate(time.Second)
	ids := strconv.FormatInt(id, 10)
	q := url.Values{
		"m":   {strconv.FormatInt(member, 10)},
		"exp": {strconv.FormatInt(exp.Unix(), 10)},
		"sig": {base64.RawURLEncoding.EncodeToString(mac(key, ids, member, exp.Unix()))},
	}
	return "/v1/attachments/" + ids + "?" + q.Encode(), exp, nil
}

var (
	errURLExpired   = connect.NewError(connect.CodePermissionDenied, errors.New("this attachment URL has expired; ask for a new one (GetAttachmentUrl)"))
	errURLSignature = connect.NewError(connect.CodePermissionDenied, errors.New("this attachment URL is not valid"))
)

// verify returns the member a signed URL was issued to, or permission
// denied when it is malformed, altered, for another attachment or expired.
func (u *attachmentURLs) verify(ctx context.Context, id string, q url.Values) (int64, error) {
	member, err1 := strconv.ParseInt(q.Get("m"), 10, 64)
	exp, err2 := strconv.ParseInt(q.Get("exp"), 10, 64)
	sig, err3 := base64.RawURLEncoding.DecodeString(q.Get("sig"))
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, errURLSignature
	}
	key, err := u.signingKey(ctx)
	if err != nil {
		return 0, err
	}
	// The signature first: an expiry someone edited is a bad signature.
	if !hmac.Equal(sig, mac(key, id, member, exp)) {
		return 0, errURLSignature
	}
	if u.now().Unix() >= exp {
		return 0, errURLExpired
	}
	return member, nil
}

// downloader returns the member a download is for: the one a signed URL
// names (a request with sig=), else the bearer token's.
func (s *attachmentServer) downloader(r *http.Request) (int64, error) {
	if q := r.URL.Query(); q.Has("sig") {
		return s.urls.verify(r.Context(), r.PathValue("id"), q)
	}
	caller, err := s.authn.AuthenticateRequest(r)
	return caller.MemberID, err
}

// contentDisposition keeps every download but media out of the browser's
// window: a browser shows images, audio and video inline, and saves anything
// else (a PDF, an HTML file someone uploaded as a "document") as a file.
func contentDisposition(mediaType string) string {
	if strings.Contains(mediaType, "svg") {
		return "attachment" // a document that can carry script; never stored, a second guard
	}
	for _, inline := range []string{"image/", "audio/", "video/"} {
		if strings.HasPrefix(mediaType, inline) {
			return "inline"
		}
	}
	return "attachment"
}

type attachmentIDParams struct {
	AttachmentID int64 `name:"attachment_id" validate:"gt=0"`
}

// GetAttachmentUrl signs a download URL for an attachment the caller may
// read; any other is not found, as for a download.
func (s *ChatServer) GetAttachmentUrl(ctx context.Context, req *v1.GetAttachmentUrlRequest) (*v1.GetAttachmentUrlResponse, error) {
	me := callerFrom(ctx).MemberID
	p := attachmentIDParams{AttachmentID: req.GetAttachmentId()}
	if err := check(p); err != nil {
		return nil, err
	}
	allowed, err := s.q.CanReadAttachment(ctx, db.CanReadAttachmentParams{AttachmentID: p.AttachmentID, MemberID: me})
	if err != nil {
		return nil, fmt.Errorf("can read attachment: %w", err)
	}
	if allowed == nil || !*allowed {
		return nil, errAttachmentNotFound
	}
	u, exp, err := s.urls.sign(ctx, p.AttachmentID, me)
	if err != nil {
		return nil, err
	}
	return &v1.GetAttachmentUrlResponse{Url: u, ExpiresAt: timestamppb.New(exp)}, nil
}
