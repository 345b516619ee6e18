// Package karlmalone holds the files the server embeds that live outside any
// Go package: the OpenAPI description that buf generates into gen/openapi,
// and the API browser vendored into web/docs. It sits at the module root
// because go:embed cannot reach into a parent directory, and gen/ holds
// generated files only.
package karlmalone

import (
	"embed"
	"io/fs"
)

// OpenAPI is the API's OpenAPI 3 description (YAML), generated from the
// protos and proto/openapi.base.yaml by `make generate`.
//
//go:embed gen/openapi/karlmalone.openapi.yaml
var OpenAPI []byte

//go:embed web/docs/index.html web/docs/*.js web/docs/*.css web/docs/*.png
var docs embed.FS

// Docs is the API browser: index.html and the assets it loads.
func Docs() fs.FS {
	sub, err := fs.Sub(docs, "web/docs")
	if err != nil {
		panic(err) // a constant, valid path
	}
	return sub
}
