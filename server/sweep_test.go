package server_test

import (
	"fmt"
	"hash/fnv"
	"strings"
	"testing"

	"connectrpc.com/connect"
)

// sweepBodies is how many generated bodies each method gets: a quarter each
// as protobuf and JSON, with and without a valid token.
const sweepBodies = 200

// TestGeneratedInputSweep sends every method of the API (read from the
// generated descriptors) sweepBodies seeded random bodies through a real
// HTTP client, and fails on any answer untrusted input must never get: a
// 5xx, internal, unknown, unavailable. Each method is swept by a member of
// its own with a contact, a group and messages, so that the small ids the
// generator favours name real rows and the bodies get past "not found"
// into the code that acts. The seeds are fixed per method name: a failure
// reproduces, and adding a method changes no other method's inputs.
func TestGeneratedInputSweep(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	n := sweepBodies
	if testing.Short() {
		n /= 5
	}
	peer := e.register(t, "peer")
	failures := 0
	for _, m := range apiMethods(t) {
		me := sweeper(t, e, peer)

		g := newInputGen(seedOf(m.procedure))
		for i := range n {
			encoding, token := i%2, ""
			if i/2%2 == 0 {
				token = me.Token
			}
			body := g.body(m.input, encoding)
			a, err := probe(ctx, e.H1, e.URL, m, encoding, token, body)
			switch {
			case err != nil:
				t.Errorf("%s body %d: %v", m.procedure, i, err)
				failures++
			case verdict(m, encoding, body, a) != "":
				t.Errorf("%s body %d (%s, token %t): %s\nbody: %.400q", m.procedure, i, []string{"proto", "json"}[encoding], token != "", verdict(m, encoding, body, a), body)
				failures++
			case token != "" && a.code == connect.CodeUnauthenticated:
				// The body ended the session (Logout, RevokeSession): sign in again.
				me = e.login(t, me.Phone, me.Password)
			}
			if failures >= 20 {
				t.Fatalf("stopping after %d failures", failures)
			}
		}
	}
	// A server stream's end is logged, not sent, once the client has hung
	// up; internal and unknown are logged at level ERROR, as panics are.
	for line := range strings.Lines(e.Logs.String()) {
		if strings.Contains(line, "level=ERROR") {
			t.Errorf("the server logged an error: %s", line)
		}
	}
}

// seedOf is a method's fixed seed.
func seedOf(procedure string) uint64 {
	h := fnv.New64a()
	fmt.Fprint(h, "sweep", procedure)
	return h.Sum64()
}
