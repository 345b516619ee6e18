package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// The transport limits that sit in front of the Connect handlers, before
// Connect reads a byte of the body (docs/SECURITY.md):
//
//   - the body must arrive within Config.BodyReadTimeout, so a client that
//     promises a body and sends nothing holds a connection for that long and
//     no longer (http.Server's ReadTimeout would also cut streaming RPCs and
//     WebSockets, so the deadline is set per request, only on requests that
//     have a body, and lifted once the body has been read);
//   - the bearer token is checked from the headers alone, so an
//     unauthenticated request never makes the server read (up to
//     MaxRequestBytes of) its body.

// rpcGuard wraps the Connect handlers of the four services.
type rpcGuard struct {
	authn   *Authenticator
	cfg     Config
	errs    *connect.ErrorWriter
	metrics *metrics
	access  *accessLogger
	next    http.Handler
}

type responseControllerKey struct{}

// responseController returns the controller of the request behind ctx (nil
// outside the Connect handlers): Subscribe sets its write deadlines on it.
func responseController(ctx context.Context) *http.ResponseController {
	rc, _ := ctx.Value(responseControllerKey{}).(*http.ResponseController)
	return rc
}

func (g *rpcGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rc := http.NewResponseController(w)
	ctx := context.WithValue(r.Context(), responseControllerKey{}, rc)
	if !publicProcedures[r.URL.Path] {
		var err error
		ctx, err = g.authn.authenticateHeader(ctx, r.Header.Get("Authorization"))
		if err != nil {
			// Answered in the request's own protocol (Connect, gRPC or
			// gRPC-Web) without reading the body. A token that could not
			// be checked (database down) is answered as the interceptors
			// would: through the one error mapping.
			if !errors.Is(err, errBadToken) {
				err = toConnectError(r.Context(), g.authn.log, "authenticate", err)
			}
			var cerr *connect.Error
			if !errors.As(err, &cerr) {
				return // the client is gone
			}
			if cerr.Code() == connect.CodeUnauthenticated {
				w.Header().Set("WWW-Authenticate", `Bearer realm="karlmalone"`)
			}
			// Counted and logged as the interceptors would have, for the
			// procedures that exist (the label set stays bounded).
			if knownProcedure(r.URL.Path) {
				g.metrics.observe(r.URL.Path, start, cerr)
				g.access.line(r.Context(), r.URL.Path, start, &accessEntry{}, cerr)
			}
			if r.ProtoMajor == 1 && r.ContentLength != 0 {
				// The body stays unread: close the connection rather than
				// wait for the body to discard it.
				w.Header().Set("Connection", "close")
			}
			g.errs.Write(w, r, cerr)
			return
		}
	}
	if hasBody(r) && g.cfg.BodyReadTimeout > 0 {
		if err := rc.SetReadDeadline(time.Now().Add(g.cfg.BodyReadTimeout)); err == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, w: w, http1: r.ProtoMajor == 1}
		}
	}
	g.next.ServeHTTP(w, r.WithContext(ctx))
}

// knownProcedure reports whether path names a method of the API
// ("/karlmalone.v1.ChatService/SendMessage").
func knownProcedure(path string) bool {
	service, method, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok {
		return false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service + "." + method))
	if err != nil {
		return false
	}
	_, isMethod := d.(protoreflect.MethodDescriptor)
	return isMethod
}

// hasBody reports whether r may carry a body: a GET (Connect's GET for
// side-effect-free methods, a WebSocket upgrade) carries none, and must never
// get a read deadline: a hijacked connection keeps it.
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// deadlineBody lifts the body's read deadline once the body has been read to
// its end: a long handler (a send waiting on its batch, a stream) must not be
// cut off by a deadline meant for the body.
type deadlineBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	w     http.ResponseWriter
	http1 bool
	done  bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case b.done || err == nil:
	case errors.Is(err, io.EOF):
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	default:
		b.done = true
		closeAfterBrokenBody(b.w, b.http1)
	}
	return n, err
}

// closeAfterBrokenBody makes an HTTP/1.1 connection close after the answer
// to a request whose body failed to arrive (deadline, cut off): net/http
// would otherwise keep it for the next request, with the rest of the body
// still to come and no deadline on it. (HTTP/2 ends only the stream.)
func closeAfterBrokenBody(w http.ResponseWriter, http1 bool) {
	if http1 {
		w.Header().Set("Connection", "close")
	}
}

// progressBody is an upload's body: each read that brings bytes moves the
// read deadline to idle from now, never past the upload's overall limit. A
// client on a slow line uploads at its pace; one that stops is cut off after
// idle.
type progressBody struct {
	io.ReadCloser
	w          http.ResponseWriter
	http1      bool
	rc         *http.ResponseController
	idle       time.Duration
	limit      time.Time // the overall deadline
	lastExtend time.Time
}

// newProgressBody sets the first deadline on r's connection and returns the
// body that keeps moving it; r's body is returned as is when the connection
// takes no deadlines.
func newProgressBody(w http.ResponseWriter, r *http.Request, idle, total time.Duration) io.ReadCloser {
	rc := http.NewResponseController(w)
	now := time.Now()
	pb := &progressBody{ReadCloser: r.Body, w: w, http1: r.ProtoMajor == 1, rc: rc,
		idle: idle, limit: now.Add(total), lastExtend: now}
	if err := rc.SetReadDeadline(pb.next(now)); err != nil {
		return r.Body
	}
	return pb
}

func (b *progressBody) next(now time.Time) time.Time {
	d := now.Add(b.idle)
	if d.After(b.limit) {
		return b.limit
	}
	return d
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch now := time.Now(); {
	case errors.Is(err, io.EOF):
		b.rc.SetReadDeadline(time.Time{})
	case err != nil:
		closeAfterBrokenBody(b.w, b.http1)
	case n > 0 && now.Sub(b.lastExtend) >= b.idle/8:
		// Moved only now and then: a deadline is a timer reset, and an
		// upload is many reads.
		b.lastExtend = now
		b.rc.SetReadDeadline(b.next(now))
	}
	return n, err
}
