package server

import "github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"

// ContactServer implements ContactService.
type ContactServer struct {
	karlmalonev1connect.UnimplementedContactServiceHandler
	*base
}
