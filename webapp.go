package karlmalone

import (
	"embed"
	"io/fs"
)

// The chat app (web/app), as `make generate` builds it with esbuild into
// web/app/dist: index.html, app.js and app.css. Checked in, so building the
// server needs no Node.js.
//
//go:embed web/app/dist/index.html web/app/dist/app.js web/app/dist/app.css
var app embed.FS

// App is the chat app served at /: index.html and the assets it loads.
func App() fs.FS {
	sub, err := fs.Sub(app, "web/app/dist")
	if err != nil {
		panic(err) // a constant, valid path
	}
	return sub
}
