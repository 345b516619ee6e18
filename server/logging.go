package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
)

// accessLog writes one structured line per RPC: procedure, code, duration and
// the member id once authenticated. Never the token, never the request body.
func accessLog(log *slog.Logger) connect.Interceptor { return &accessLogger{log: log} }

type accessLogger struct{ log *slog.Logger }

// accessEntry is filled in by inner interceptors (auth sets the member id).
type accessEntry struct{ memberID int64 }

type accessEntryKey struct{}

func noteMember(ctx context.Context, memberID int64) {
	if e, ok := ctx.Value(accessEntryKey{}).(*accessEntry); ok {
		e.memberID = memberID
	}
}

func (l *accessLogger) line(ctx context.Context, procedure string, start time.Time, e *accessEntry, err error) {
	code := "ok"
	level := slog.LevelInfo
	if err != nil {
		c := codeOf(err)
		code = c.String()
		if c == connect.CodeInternal || c == connect.CodeUnknown {
			level = slog.LevelError
		}
	}
	l.log.LogAttrs(ctx, level, "rpc",
		slog.String("procedure", procedure),
		slog.String("code", code),
		slog.Duration("duration", time.Since(start)),
		slog.Int64("member_id", e.memberID))
}

func (l *accessLogger) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start, e := time.Now(), &accessEntry{}
		res, err := next(context.WithValue(ctx, accessEntryKey{}, e), req)
		l.line(ctx, req.Spec().Procedure, start, e, err)
		return res, err
	}
}

func (l *accessLogger) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (l *accessLogger) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start, e := time.Now(), &accessEntry{}
		err := next(context.WithValue(ctx, accessEntryKey{}, e), conn)
		l.line(ctx, conn.Spec().Procedure, start, e, err)
		return err
	}
}

// codeOf is the code the client sees: connect codes a bare context error
// itself (a client that went away is canceled, not unknown).
func codeOf(err error) connect.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	}
	return connect.CodeOf(err)
}
