package server_test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
)

// FuzzRequest sends any bytes, as protobuf or JSON, with or without a valid
// token, to any method (named by its procedure; a name that is none picks
// one by its hash) of a real server on a real database, and fails on an
// answer untrusted input must never get (see verdict): a panic in a handler
// is internal, so it fails too. Plain `go test` runs the checked-in corpus
// (testdata/fuzz/FuzzRequest); `make fuzz` searches for more.
func FuzzRequest(f *testing.F) {
	e := newEnv(f)
	methods := apiMethods(f)
	byName := map[string]apiMethod{}
	for _, m := range methods {
		byName[m.procedure] = m
	}
	me := sweeper(f, e, e.register(f, "peer"))
	f.Fuzz(func(t *testing.T, procedure string, json, authed bool, body []byte) {
		m, ok := byName[procedure]
		if !ok {
			m = methods[seedOf(procedure)%uint64(len(methods))]
		}
		encoding, token := asProto, ""
		if json {
			encoding = asJSON
		}
		if authed {
			token = me.Token
		}
		a, err := probe(t.Context(), e.H1, e.URL, m, encoding, token, body)
		if err != nil {
			t.Fatalf("%s: %v", m.procedure, err)
		}
		if v := verdict(m, encoding, body, a); v != "" {
			t.Fatalf("%s: %s", m.procedure, v)
		}
		if authed && a.code == connect.CodeUnauthenticated {
			me = e.login(t, me.Phone, me.Password) // the body ended the session
		}
	})
}

// fuzzSeedPrefix names the corpus files the generator writes; files the
// fuzzer adds (inputs that failed once) keep their own names and stay.
const fuzzSeedPrefix = "seed-"

// TestFuzzRequestCorpus: the checked-in corpus holds seeds for every method,
// so that `go test` sends each method its seeds and a method added to proto/
// without them fails here. KARLMALONE_WRITE_FUZZ_SEEDS=1 rewrites the seeds
// from the generator (four a method: protobuf and JSON, well-formed or not,
// one without a token).
func TestFuzzRequestCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzRequest")
	methods := apiMethods(t)
	if os.Getenv("KARLMALONE_WRITE_FUZZ_SEEDS") != "" {
		old, _ := filepath.Glob(filepath.Join(dir, fuzzSeedPrefix+"*"))
		for _, p := range old {
			os.Remove(p)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, m := range methods {
			g := newInputGen(seedOf("corpus" + m.procedure))
			for i := range 4 {
				body := g.body(m.input, i%2)
				for len(body) > 2048 { // keep the corpus small
					body = g.body(m.input, i%2)
				}
				data := fmt.Sprintf("go test fuzz v1\nstring(%s)\nbool(%t)\nbool(%t)\n[]byte(%s)\n",
					strconv.Quote(m.procedure), i%2 == asJSON, i != 3, strconv.Quote(string(body)))
				name := fmt.Sprintf("%s%x", fuzzSeedPrefix, sha256.Sum256([]byte(data)))[:len(fuzzSeedPrefix)+16]
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read the corpus: %v", err)
	}
	var all strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	for _, m := range methods {
		if !strings.Contains(all.String(), "string("+strconv.Quote(m.procedure)+")") {
			t.Errorf("no seed for %s in %s: run KARLMALONE_WRITE_FUZZ_SEEDS=1 go test -run TestFuzzRequestCorpus ./server/ and commit the files", m.procedure, dir)
		}
	}
}
