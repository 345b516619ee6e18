package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Errors handlers return for common outcomes. Handlers may also return
// connect errors directly when a precise message helps the client.
var (
	errNotFound   = errors.New("not found")
	errPermission = errors.New("permission denied")
)

// toConnectError is the one place where errors become Connect codes (see the
// table in DESIGN.md). Handlers return plain wrapped errors or *connect.Error;
// the errors interceptor calls this on whatever comes back. Internal errors are
// logged with their detail and reach the client as a bare "internal error".
func toConnectError(ctx context.Context, log *slog.Logger, procedure string, err error) error {
	if err == nil {
		return nil
	}
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		return cerr
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// Connect codes these itself (canceled, deadline_exceeded) — unless the
		// deadline was a database timeout while the client still waits.
		if ctx.Err() != nil {
			return err
		}
		return connect.NewError(connect.CodeUnavailable, errors.New("database timed out; retry"))
	}
	if errors.Is(err, pgx.ErrNoRows) || errors.Is(err, errNotFound) {
		return connect.NewError(connect.CodeNotFound, errors.New("not found"))
	}
	if errors.Is(err, errPermission) {
		return connect.NewError(connect.CodePermissionDenied, errPermission)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505":
			return connect.NewError(connect.CodeAlreadyExists, errors.New("already exists"))
		case pgErr.Code == "23503":
			return connect.NewError(connect.CodeFailedPrecondition, errors.New("a referenced record does not exist"))
		case pgErr.Code == "23514":
			return connect.NewError(connect.CodeInvalidArgument, errors.New("value out of range"))
		case pgErr.Code == "40001" || pgErr.Code == "40P01":
			return connect.NewError(connect.CodeAborted, errors.New("conflict with a concurrent change; retry"))
		case strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "57P"), pgErr.Code == "53300":
			return unavailable(log, procedure, err)
		}
	}
	if isConnectionError(err) {
		return unavailable(log, procedure, err)
	}
	log.ErrorContext(ctx, "internal error", "procedure", procedure, "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}

func unavailable(log *slog.Logger, procedure string, err error) error {
	log.Warn("database unavailable", "procedure", procedure, "err", err)
	return connect.NewError(connect.CodeUnavailable, errors.New("database unavailable; retry"))
}

// isConnectionError reports errors that mean the database could not be reached
// or the connection broke: the request may succeed if retried.
func isConnectionError(err error) bool {
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || pgconn.SafeToRetry(err)
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
