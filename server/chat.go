package server

import "github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"

// ChatServer implements ChatService.
type ChatServer struct {
	karlmalonev1connect.UnimplementedChatServiceHandler
	*base
}
