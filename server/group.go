package server

import "github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"

// GroupServer implements GroupService.
type GroupServer struct {
	karlmalonev1connect.UnimplementedGroupServiceHandler
	*base
}
