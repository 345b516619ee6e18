package store

import (
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Kind is what a database failure means for the caller. server.toConnectError
// gives each kind its Connect code (server/errors.go, storeCodes).
type Kind uint8

// The kinds, each with the Connect code it becomes.
const (
	// NotFound: the statement matched no row (not_found).
	NotFound Kind = iota + 1
	// Conflict: a unique constraint refused the row (already_exists).
	Conflict
	// Reference: a foreign key names a row that does not exist (failed_precondition).
	Reference
	// Invalid: a value the schema refuses, by a CHECK constraint or as a
	// data exception (invalid_argument).
	Invalid
	// Retry: the transaction lost a race (serialization failure, deadlock)
	// and may succeed if run again (aborted).
	Retry
	// Timeout: the database cancelled a statement that ran too long
	// (deadline_exceeded).
	Timeout
	// Unavailable: the database cannot be reached or cannot serve now; the
	// request may succeed later (unavailable).
	Unavailable
)

// sqlstates gives the kind of each SQLSTATE the program treats specially: a
// full code, or a class as its first two (or three) characters. The first
// match wins, so a code goes before its class. Anything else is internal.
var sqlstates = []struct {
	prefix string
	kind   Kind
}{
	{"23505", Conflict},  // unique_violation
	{"23503", Reference}, // foreign_key_violation
	{"23514", Invalid},   // check_violation
	{"22", Invalid},      // data_exception: out of range, too long, malformed
	{"40001", Retry},     // serialization_failure
	{"40P01", Retry},     // deadlock_detected
	{"57014", Timeout},   // query_canceled: statement_timeout passed
	{"57P", Unavailable}, // admin_shutdown, crash_shutdown, cannot_connect_now
	{"08", Unavailable},  // connection_exception
	{"53", Unavailable},  // insufficient_resources: disk full, out of memory, too many connections
}

// Error is a database failure translated at the store's boundary. Its text
// carries the database's detail, for logs only: clients see the message of
// the Connect code its Kind maps to.
type Error struct {
	Kind Kind
	// Constraint names the constraint or unique index a Conflict, Reference
	// or Invalid violated ("" when the database did not say).
	Constraint string
	err        error // the driver's error
}

func (e *Error) Error() string {
	switch {
	case e.err != nil:
		return e.err.Error()
	case e.Constraint != "":
		return "store: " + e.Kind.String() + " (" + e.Constraint + ")"
	}
	return "store: " + e.Kind.String()
}

func (k Kind) String() string {
	switch k {
	case NotFound:
		return "not found"
	case Conflict:
		return "conflict"
	case Reference:
		return "missing reference"
	case Invalid:
		return "invalid value"
	case Retry:
		return "retry"
	case Timeout:
		return "timeout"
	case Unavailable:
		return "unavailable"
	}
	return "unknown"
}

// Unwrap returns the driver's error.
func (e *Error) Unwrap() error { return e.err }

// Is lets errors.Is match the sentinels below: ErrNotFound matches every
// NotFound, a named constraint error matches violations of that constraint.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.err == nil && t.Kind == e.Kind && (t.Constraint == "" || t.Constraint == e.Constraint)
}

// ErrNotFound is what a query that finds no row returns (errors.Is).
var ErrNotFound = &Error{Kind: NotFound}

// Violations of the unique constraints the handlers answer in their own
// words (errors.Is). The names are the schema's (schema/*.sql).
var (
	ErrPhoneTaken        = &Error{Kind: Conflict, Constraint: "members_phone_key"}
	ErrRequestPending    = &Error{Kind: Conflict, Constraint: "friend_requests_one_pending"}
	ErrClientMsgIDReused = &Error{Kind: Conflict, Constraint: "messages_idempotency"}
)

// KindOf is err's kind, 0 when err is no database failure the program
// treats specially (a bug, or not the database's at all).
func KindOf(err error) Kind {
	if e, ok := errors.AsType[*Error](translate(err)); ok {
		return e.Kind
	}
	return 0
}

// translate turns the driver's errors into *Error and passes every other
// error through: errors already translated, and the handlers' own.
func translate(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*Error](err); ok {
		return err
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return &Error{Kind: NotFound, err: err}
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		for _, s := range sqlstates {
			if strings.HasPrefix(pgErr.Code, s.prefix) {
				return &Error{Kind: s.kind, Constraint: pgErr.ConstraintName, err: err}
			}
		}
		return err
	}
	if unreachable(err) {
		return &Error{Kind: Unavailable, err: err}
	}
	return err
}

// unreachable reports errors that mean the database could not be reached or
// the connection broke: the request may succeed if retried.
func unreachable(err error) bool {
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || pgconn.SafeToRetry(err)
}
