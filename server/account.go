package server

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

func (s *MemberServer) DeleteAccount(ctx context.Context, req *v1.DeleteAccountRequest) (*v1.DeleteAccountResponse, error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("not yet"))
}
