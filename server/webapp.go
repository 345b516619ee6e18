package server

import (
	"fmt"
	"net/http"
	"strings"
	"sync"

	karlmalone "github.com/karlmalone/karlmalone"
)

// appCSP is the chat app's Content-Security-Policy: everything from this
// origin ('self' also covers its ws: and wss: push socket and the signed
// attachment URLs images load from), previews of a file about to be sent
// through blob: URLs, no inline script or style, never framed.
const appCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
	"media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

var appDir = sync.OnceValue(func() *staticDir { return newStaticDir(karlmalone.App()) })

// mountWebApp serves the chat app (web/app) at / to browsers, its assets at
// /app/{file}, and the plain-text summary of the API at / to clients that do
// not ask for HTML (curl).
func mountWebApp(mux *http.ServeMux) {
	page := appDir().file("index.html").(*staticFile)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept"), "text/html") {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Vary", "Accept")
			fmt.Fprint(w, rootText)
			return
		}
		h := w.Header()
		h.Set("Vary", "Accept")
		h.Set("Referrer-Policy", "no-referrer")
		// staticFile sets the /docs policy on HTML; the app's is stricter.
		page.ServeHTTP(cspWriter{ResponseWriter: w, csp: appCSP}, r)
	})
	mux.HandleFunc("GET /app/{file}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("file") == "index.html" {
			http.NotFound(w, r) // the page is served at / only, with its own policy
			return
		}
		appDir().ServeHTTP(w, r)
	})
}

// cspWriter replaces the Content-Security-Policy just before the header is
// written, so the app's page can reuse staticFile (ETag, revalidation).
type cspWriter struct {
	http.ResponseWriter
	csp string
}

func (w cspWriter) WriteHeader(code int) {
	w.Header().Set("Content-Security-Policy", w.csp)
	w.ResponseWriter.WriteHeader(code)
}

func (w cspWriter) Write(b []byte) (int, error) {
	w.Header().Set("Content-Security-Policy", w.csp) // in case Write comes without WriteHeader
	return w.ResponseWriter.Write(b)
}
