package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/karlmalone/karlmalone/gen/db"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/internal/bearer"
	"github.com/karlmalone/karlmalone/push"
	"github.com/karlmalone/karlmalone/store"
)

// Caller is the authenticated member and session behind a request, and when
// that session expires.
type Caller struct {
	MemberID, SessionID int64
	ExpiresAt           time.Time
}

type callerKey struct{}

// callerFrom returns the caller the auth interceptor put in ctx. Every handler
// but Register and Login runs behind that interceptor, so it is always there.
func callerFrom(ctx context.Context) Caller {
	c, ok := ctx.Value(callerKey{}).(Caller)
	if !ok {
		panic("server: handler reached without an authenticated caller")
	}
	return c
}

// publicProcedures need no token.
var publicProcedures = map[string]bool{
	karlmalonev1connect.MemberServiceRegisterProcedure: true,
	karlmalonev1connect.MemberServiceLoginProcedure:    true,
}

var errBadToken = connect.NewError(connect.CodeUnauthenticated, errors.New("missing, invalid or expired access token"))

// Authenticator turns access tokens into callers. Tokens are 256 random bits;
// only their SHA-256 is stored, so a database leak reveals no usable token.
type Authenticator struct {
	q     *db.Queries
	log   *slog.Logger
	now   func() time.Time
	cache *sessionCache // sessioncache.go

	testHookAuthenticated func(Caller) // after a token is accepted (see Deps)
}

// newToken returns a fresh token and the hash to store for it.
func newToken() (token string, hash []byte) {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token)
}

func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// Authenticate resolves a bearer token. Revoked (deleted) and expired sessions
// fail at once: the session cache (sessioncache.go) hears of every revocation
// and refuses a session from its expiry on.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (Caller, error) {
	if token == "" || len(token) > 256 {
		return Caller{}, errBadToken
	}
	s, err := a.session(ctx, hashToken(token))
	if errors.Is(err, store.ErrNotFound) {
		return Caller{}, errBadToken // unknown, revoked or expired
	}
	if err != nil {
		return Caller{}, err
	}
	c := Caller{MemberID: s.MemberID, SessionID: s.ID, ExpiresAt: s.ExpiresAt}
	if a.testHookAuthenticated != nil {
		a.testHookAuthenticated(c)
	}
	return c, nil
}

// session reads a live session through the cache.
func (a *Authenticator) session(ctx context.Context, hash []byte) (db.Session, error) {
	now := a.now()
	s, found, gen := a.cache.get(hash, now)
	if found {
		return s, nil
	}
	s, err := a.q.GetSessionByTokenHash(ctx, hash)
	if err != nil {
		return s, err
	}
	if !now.Before(s.ExpiresAt) {
		return s, store.ErrNotFound // expired by this node's clock, if not yet by the database's
	}
	a.cache.put(hash, s, gen, now)
	// Keep last_seen_at roughly current without writing on every call (the
	// cache's TTL is far below this interval, so a hit never needs it).
	if now.Sub(s.LastSeenAt) > 5*time.Minute {
		if err := a.q.TouchSession(ctx, s.ID); err != nil {
			a.log.WarnContext(ctx, "touch session", "session_id", s.ID, "err", err)
		}
	}
	return s, nil
}

// principal adapts Authenticate for the push endpoint.
func (a *Authenticator) principal(ctx context.Context, token string) (push.Principal, error) {
	c, err := a.Authenticate(ctx, token)
	if errors.Is(err, errBadToken) {
		return push.Principal{}, push.ErrBadToken
	}
	return push.Principal{MemberID: c.MemberID, SessionID: c.SessionID, ExpiresAt: c.ExpiresAt}, err
}

// authenticateHeader reads "Authorization: Bearer <token>" (bearer.Token,
// the parser the push endpoint uses too).
func (a *Authenticator) authenticateHeader(ctx context.Context, header string) (context.Context, error) {
	c, err := a.Authenticate(ctx, bearer.Token(header))
	if err != nil {
		return nil, err
	}
	noteMember(ctx, c.MemberID)
	return context.WithValue(ctx, callerKey{}, c), nil
}

// AuthenticateRequest authenticates a plain HTTP request (the attachment
// routes) by its "Authorization: Bearer" header, exactly as RPCs are.
func (a *Authenticator) AuthenticateRequest(r *http.Request) (Caller, error) {
	ctx, err := a.authenticateHeader(r.Context(), r.Header.Get("Authorization"))
	if err != nil {
		return Caller{}, err
	}
	return callerFrom(ctx), nil
}

// authenticated returns ctx with its caller: the one rpcGuard found from the
// headers before the body was read (transport.go), or, for a handler mounted
// without the guard, the header's.
func (a *Authenticator) authenticated(ctx context.Context, header string) (context.Context, error) {
	if c, ok := ctx.Value(callerKey{}).(Caller); ok {
		noteMember(ctx, c.MemberID) // the access log's entry exists only now
		return ctx, nil
	}
	return a.authenticateHeader(ctx, header)
}

// authInterceptor authenticates every procedure except the public ones.
type authInterceptor struct{ a *Authenticator }

func (i authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if publicProcedures[req.Spec().Procedure] {
			return next(ctx, req)
		}
		ctx, err := i.a.authenticated(ctx, req.Header().Get("Authorization"))
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := i.a.authenticated(ctx, conn.RequestHeader().Get("Authorization"))
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}
