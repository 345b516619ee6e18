package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestToConnectError is the error table (docs/ARCHITECTURE.md, "Errors") as
// toConnectError keeps it, for the causes an API call cannot readily produce: database failures
// by SQLSTATE, and context errors that are not the client's.
func TestToConnectError(t *testing.T) {
	t.Parallel()
	pg := func(code string) error {
		return fmt.Errorf("some query: %w", &pgconn.PgError{Code: code, Message: "secret detail"})
	}
	live := t.Context()
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		err    error
		code   connect.Code
		logged bool // an internal error is logged with its detail
	}{
		{"no rows", live, pgx.ErrNoRows, connect.CodeNotFound, false},
		{"unique", live, pg("23505"), connect.CodeAlreadyExists, false},
		{"foreign key", live, pg("23503"), connect.CodeFailedPrecondition, false},
		{"check", live, pg("23514"), connect.CodeInvalidArgument, false},
		{"data exception", live, pg("22003"), connect.CodeInvalidArgument, false},
		{"serialization", live, pg("40001"), connect.CodeAborted, false},
		{"deadlock", live, pg("40P01"), connect.CodeAborted, false},
		{"statement timeout", live, pg("57014"), connect.CodeDeadlineExceeded, false},
		{"admin shutdown", live, pg("57P01"), connect.CodeUnavailable, false},
		{"connection failure", live, pg("08006"), connect.CodeUnavailable, false},
		{"insufficient resources", live, pg("53100"), connect.CodeUnavailable, false},
		{"undefined table", live, pg("42P01"), connect.CodeInternal, true},
		{"a bug", live, errors.New("boom"), connect.CodeInternal, true},
		{"not found", live, fmt.Errorf("x: %w", errNotFound), connect.CodeNotFound, false},
		{"permission", live, fmt.Errorf("x: %w", errPermission), connect.CodePermissionDenied, false},
		{"connect error", live, connect.NewError(connect.CodeOutOfRange, errors.New("as is")), connect.CodeOutOfRange, false},
		// A deadline of the server's own while the client waits: the
		// database was too slow, retry.
		{"server deadline", live, fmt.Errorf("batch: %w", context.DeadlineExceeded), connect.CodeUnavailable, false},
		// A cancellation that is not the client's is no database timeout:
		// something in the server cancelled work it should not have.
		{"server cancellation", live, fmt.Errorf("batch: %w", context.Canceled), connect.CodeInternal, true},
	} {
		var logs bytes.Buffer
		got := toConnectError(tc.ctx, slog.New(slog.NewTextHandler(&logs, nil)), "/test", tc.err)
		cerr, ok := errors.AsType[*connect.Error](got)
		if !ok || cerr.Code() != tc.code {
			t.Errorf("%s: %v, want code %v", tc.name, got, tc.code)
			continue
		}
		if strings.Contains(cerr.Message(), "secret detail") {
			t.Errorf("%s: the client sees the database's text: %q", tc.name, cerr.Message())
		}
		if l := strings.Contains(logs.String(), "internal error"); l != tc.logged {
			t.Errorf("%s: logged %v, want %v: %s", tc.name, l, tc.logged, logs.String())
		}
	}
	// The client went away: its context error passes through for Connect
	// to code (canceled), and nothing is logged as an error.
	for _, err := range []error{context.Canceled, fmt.Errorf("q: %w", context.Canceled)} {
		if got := toConnectError(gone, slog.New(slog.DiscardHandler), "/test", err); !errors.Is(got, context.Canceled) {
			t.Errorf("client gone: %v, want context.Canceled as is", got)
		}
	}
}
