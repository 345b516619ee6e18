package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/rs/cors"

	karlmalone "github.com/karlmalone/karlmalone"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/store"
)

// serviceNames are the services this server offers over reflection and health.
var serviceNames = []string{
	karlmalonev1connect.MemberServiceName,
	karlmalonev1connect.ContactServiceName,
	karlmalonev1connect.GroupServiceName,
	karlmalonev1connect.ChatServiceName,
}

// mountRoutes mounts what serves beside the four services: the attachment
// routes, /metrics, the API description and browser, and gRPC reflection and
// health. All but the attachments are open.
func mountRoutes(mux *http.ServeMux, d Deps, b *base, authn *Authenticator, m *metrics) {
	att := newAttachmentServer(b, authn, attachmentStore(d))
	mux.HandleFunc("POST /v1/attachments", att.upload)
	mux.HandleFunc("GET /v1/attachments/{id}", att.download)
	exp := &exportServer{base: b, authn: authn, errs: connect.NewErrorWriter()}
	mux.HandleFunc("GET /v1/export", exp.export)

	mux.Handle("GET /metrics", m.handler())

	mux.Handle("GET /openapi.yaml", openAPIFile())
	docs := docsDir()
	mux.Handle("GET /docs", docs.file("index.html"))
	mux.Handle("GET /docs/{$}", http.RedirectHandler("/docs", http.StatusMovedPermanently))
	mux.Handle("GET /docs/{file}", docs)

	// Reflection and health are RPCs without auth: counted and logged, no more.
	open := connect.WithHandlerOptions(
		connect.WithInterceptors(m.interceptor(), accessLog(d.Log)),
		connect.WithReadMaxBytes(d.Config.MaxRequestBytes),
	)
	reflector := grpcreflect.NewStaticReflector(append(serviceNames, grpchealth.HealthV1ServiceName)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, open))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, open))
	mux.Handle(grpchealth.NewHandler(dbHealth{b.store, d.Lifecycle}, open))
}

// dbHealth answers gRPC health checks: every service is as healthy as the
// database it cannot work without, and none once shutdown has begun (as
// /readyz).
type dbHealth struct {
	store *store.Store
	life  *Lifecycle
}

func (h dbHealth) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	known := req.Service == ""
	for _, s := range serviceNames {
		known = known || req.Service == s
	}
	if !known {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	if h.life.ShuttingDown() {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second) // as /readyz
	defer cancel()
	if err := h.store.Ping(ctx); err != nil {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// The embedded files are the same for every server in the process: read and
// hashed once.
var (
	openAPIFile = sync.OnceValue(func() *staticFile { return newStaticFile("openapi.yaml", karlmalone.OpenAPI) })
	docsDir     = sync.OnceValue(func() *staticDir { return newStaticDir(karlmalone.Docs()) })
)

// staticFile serves embedded bytes with a content-hash ETag, so browsers
// revalidate cheaply and never keep a stale copy after an upgrade.
type staticFile struct {
	name    string
	content []byte
	etag    string
	ctype   string
}

func newStaticFile(name string, content []byte) *staticFile {
	sum := sha256.Sum256(content)
	ctype := mime.TypeByExtension(path.Ext(name))
	switch path.Ext(name) {
	case ".yaml":
		ctype = "application/yaml" // RFC 9512; not in every mime table
	case "":
		ctype = "application/octet-stream"
	}
	return &staticFile{name: name, content: content, etag: `"` + hex.EncodeToString(sum[:16]) + `"`, ctype: ctype}
}

func (f *staticFile) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("ETag", f.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	if path.Ext(f.name) == ".html" {
		// Everything the page needs comes from this server; Swagger UI sets
		// inline styles and data: images.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.content))
}

// staticDir serves the files of an fs.FS at /…/{file}, read once at startup.
type staticDir struct{ files map[string]*staticFile }

func newStaticDir(fsys fs.FS) *staticDir {
	d := &staticDir{files: make(map[string]*staticFile)}
	err := fs.WalkDir(fsys, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		d.files[p] = newStaticFile(p, b)
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("server: read embedded files: %v", err)) // embedded: cannot fail at run time
	}
	return d
}

func (d *staticDir) file(name string) http.Handler {
	f, ok := d.files[name]
	if !ok {
		panic("server: no embedded file " + name)
	}
	return f
}

func (d *staticDir) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, ok := d.files[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	f.ServeHTTP(w, r)
}

// withCORS lets browser apps on the named origins call every route: Connect
// and gRPC-Web RPCs and the attachment routes. No origins, no CORS: browsers
// then keep other origins out. The origins are trusted as given; the command
// checks them with CheckCORSOrigins.
func withCORS(origins []string, h http.Handler) http.Handler {
	if len(origins) == 0 {
		return h
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: append(connectcors.AllowedMethods(), http.MethodHead),
		AllowedHeaders: append(connectcors.AllowedHeaders(),
			"Authorization",                                       // bearer tokens
			"Connect-Accept-Encoding", "Connect-Content-Encoding", // compressed Connect streams
			"Range", "If-Range", "If-None-Match", "If-Modified-Since", // attachment downloads
		),
		ExposedHeaders: append(connectcors.ExposedHeaders(),
			"Location", "ETag", "Content-Range", "Accept-Ranges", "Content-Length", "WWW-Authenticate",
		),
		// Preflights are cached for two hours (Chrome's own cap).
		MaxAge: 7200,
	}).Handler(h)
}

// CheckCORSOrigins reports a bad -cors-origins list: each origin must be
// named, as scheme://host[:port], optionally with one "*" in the host
// ("https://*.example.com"); a bare "*" is refused: CORS is for named
// origins only.
func CheckCORSOrigins(origins []string) error {
	for _, o := range origins {
		u, err := url.Parse(strings.Replace(o, "*", "x", 1))
		if o == "*" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.Path != "" || u.RawQuery != "" || u.User != nil || strings.Count(o, "*") > 1 {
			return fmt.Errorf("CORS origin %q: want scheme://host[:port], like https://app.example.com", o)
		}
	}
	return nil
}
