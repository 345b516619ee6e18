// Package bearer reads the token of an "Authorization: Bearer <token>"
// header: the one parser for RPCs, the attachment routes and the push
// endpoint, so a client that works with one works with all three.
package bearer

import "strings"

// Token returns the token of an Authorization header value, or "" when the
// value is not a bearer credential. The scheme is matched without regard to
// case (RFC 7235, section 2.1: "Bearer", "bearer" and "BEARER" are one
// scheme); blanks around the token are ignored.
func Token(authorization string) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
