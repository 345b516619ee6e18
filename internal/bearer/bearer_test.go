package bearer_test

import (
	"testing"

	"github.com/karlmalone/karlmalone/internal/bearer"
)

func TestToken(t *testing.T) {
	for header, want := range map[string]string{
		"Bearer abc":       "abc",
		"bearer abc":       "abc", // RFC 7235: the scheme is case-insensitive
		"BEARER abc":       "abc",
		"Bearer   abc  ":   "abc",
		"  Bearer abc":     "abc",
		"Bearer\tabc":      "",
		"Basic dXNlcjpwdw": "",
		"Bearer":           "",
		"Bearer ":          "",
		"Bearerabc":        "",
		"":                 "",
		"abc":              "",
	} {
		if got := bearer.Token(header); got != want {
			t.Errorf("Token(%q) = %q, want %q", header, got, want)
		}
	}
}
