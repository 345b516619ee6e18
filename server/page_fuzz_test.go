package server

import (
	"slices"
	"testing"

	"connectrpc.com/connect"
)

// FuzzPageToken: the page-token codec (page.go) gives back every key it
// encodes, and any string a client sends as page_token, decoded as a
// one-key or a two-key token, is either a token of that shape or refused
// as invalid_argument, never a panic; a one-key page that parseIDPage
// accepts starts after a positive id (ids start at 1) and has a size in
// 1..maxPageSize. Plain `go test` runs the checked-in corpus
// (testdata/fuzz/FuzzPageToken); `make fuzz` searches for more.
func FuzzPageToken(f *testing.F) {
	f.Fuzz(func(t *testing.T, a, b int64, size int32, token string) {
		for _, key := range [][]int64{{a}, {a, b}} {
			got, err := decodePageToken(encodePageToken(key...), len(key))
			if err != nil || !slices.Equal(got, key) {
				t.Fatalf("decode(encode(%v)) = %v, %v", key, got, err)
			}
		}

		for n := 1; n <= 2; n++ {
			key, err := decodePageToken(token, n)
			switch {
			case err != nil:
				wantInvalidArgument(t, err)
			case token == "" && key != nil:
				t.Fatalf("the empty token decoded as %v, want the first page", key)
			case token != "" && len(key) != n:
				t.Fatalf("token %q decoded as %d keys, want %d", token, len(key), n)
			}
		}

		p, err := parseIDPage(size, token)
		if err != nil {
			wantInvalidArgument(t, err)
			return
		}
		if p.size < 1 || p.size > maxPageSize || p.limit() != p.size+1 {
			t.Fatalf("page_size %d gave a page of %d (limit %d)", size, p.size, p.limit())
		}
		if token != "" && p.after <= 0 {
			t.Fatalf("token %q accepted with after = %d, want a positive id", token, p.after)
		}
		if token == "" && p.after != 0 {
			t.Fatalf("the first page starts after %d", p.after)
		}
	})
}

func wantInvalidArgument(t *testing.T, err error) {
	t.Helper()
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("refused with %v, want invalid_argument", err)
	}
}
