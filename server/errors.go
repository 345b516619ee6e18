package server

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/karlmalone/karlmalone/store"
)

// Errors handlers return for common outcomes. Handlers may also return
// connect errors directly when a precise message helps the client.
var (
	errNotFound   = errors.New("not found")
	errPermission = errors.New("permission denied")
)

// deletedOne answers a delete of one thing by its row count: not found when
// it matched no row (the thing is not there, or not the caller's).
func deletedOne(n int64, err error) error {
	switch {
	case err != nil:
		return err
	case n == 0:
		return errNotFound
	}
	return nil
}

// storeCodes gives each kind of database failure (store.Kind) its code and
// the message clients see; store.Error's own text stays in the logs.
var storeCodes = map[store.Kind]struct {
	code connect.Code
	msg  string
}{
	store.NotFound:    {connect.CodeNotFound, "not found"},
	store.Conflict:    {connect.CodeAlreadyExists, "already exists"},
	store.Reference:   {connect.CodeFailedPrecondition, "a referenced record does not exist"},
	store.Invalid:     {connect.CodeInvalidArgument, "value out of range"},
	store.Retry:       {connect.CodeAborted, "conflict with a concurrent change; retry"},
	store.Timeout:     {connect.CodeDeadlineExceeded, "database statement timed out"},
	store.Unavailable: {connect.CodeUnavailable, "database unavailable; retry"},
}

// toConnectError is the one place where errors become Connect codes (with
// storeCodes above; docs/ARCHITECTURE.md, "Errors"). Handlers return plain wrapped errors or *connect.Error;
// the errors interceptor calls this on whatever comes back, and so do the
// attachment routes. Internal errors are logged with their detail and reach
// the client as a bare "internal error".
func toConnectError(ctx context.Context, log *slog.Logger, procedure string, err error) error {
	if err == nil {
		return nil
	}
	if cerr, ok := errors.AsType[*connect.Error](err); ok {
		return cerr
	}
	isCtxErr := errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
	switch {
	case isCtxErr && ctx.Err() != nil:
		// The client went away or its deadline passed: Connect codes these
		// itself (canceled, deadline_exceeded).
		return err
	case errors.Is(err, context.DeadlineExceeded):
		// A deadline of the server's own (the send pipeline bounds a batch)
		// passed while the client still waits. A cancellation that is not the
		// client's has no such excuse: it falls through to internal, logged.
		return unavailable(ctx, log, procedure, "database timed out; retry", err)
	case errors.Is(err, errNotFound):
		return connect.NewError(connect.CodeNotFound, errNotFound)
	case errors.Is(err, errPermission):
		return connect.NewError(connect.CodePermissionDenied, errPermission)
	}
	if c, ok := storeCodes[store.KindOf(err)]; ok {
		if c.code == connect.CodeUnavailable {
			return unavailable(ctx, log, procedure, c.msg, err)
		}
		return connect.NewError(c.code, errors.New(c.msg))
	}
	log.ErrorContext(ctx, "internal error", "procedure", procedure, "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}

func unavailable(ctx context.Context, log *slog.Logger, procedure, msg string, err error) error {
	log.WarnContext(ctx, "database unavailable", "procedure", procedure, "err", err)
	return connect.NewError(connect.CodeUnavailable, errors.New(msg))
}

// errorInterceptor maps every handler error through toConnectError.
func errorInterceptor(log *slog.Logger) connect.Interceptor {
	return &errorMapper{log: log}
}

type errorMapper struct{ log *slog.Logger }

func (m *errorMapper) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if err != nil {
			return nil, toConnectError(ctx, m.log, req.Spec().Procedure, err)
		}
		return res, nil
	}
}

func (m *errorMapper) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (m *errorMapper) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return toConnectError(ctx, m.log, conn.Spec().Procedure, next(ctx, conn))
	}
}
