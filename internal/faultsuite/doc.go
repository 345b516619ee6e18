// Package faultsuite holds the fault suite of issue #10: the server binary
// run as a child process on a private PostgreSQL, sent bursts of messages by
// senders that retry, and hit mid-burst by kill -9, a PostgreSQL restart or a
// commit that fails. After each fault it proves, for every conversation, that
// each acknowledged message is stored exactly once, that seqs have no gap, and
// that every receiver following the resync procedure of docs/PUSH.md ends with
// exactly the history.
//
// It is a package of its own, outside server, because it tests the program
// and not the package: it may only use what a client has (the binary, the
// port, the API, the push socket) and so cannot lean on anything in-process
// that a real crash would take away. Its own test binary also runs beside
// the server's in `go test ./...` instead of after it. It has no non-test
// code; this file only says why it exists.
package faultsuite
