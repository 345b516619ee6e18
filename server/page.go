package server

import (
	"encoding/base64"
	"encoding/binary"
	"time"
)

// The one pagination scheme: lists are ordered by a key that never changes for
// a row (usually its id, or a timestamp and id), and page_token is the key of
// the last row returned, base64url-encoded and opaque to clients. Inserts
// between pages neither duplicate nor skip rows behind the cursor.

const (
	defaultPageSize = 20
	maxPageSize     = 100
)

// pageSize applies the default and the cap.
func pageSize(requested int32) (int32, error) {
	switch {
	case requested < 0:
		return 0, invalid("page_size: must not be negative")
	case requested == 0:
		return defaultPageSize, nil
	case requested > maxPageSize:
		return maxPageSize, nil
	}
	return requested, nil
}

// encodePageToken packs the cursor key of the last row of a page.
func encodePageToken(key ...int64) string {
	b := make([]byte, 0, 1+8*len(key))
	b = append(b, byte(len(key)))
	for _, k := range key {
		b = binary.BigEndian.AppendUint64(b, uint64(k))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// idPage is a request for one page of a list keyed on one id.
type idPage struct {
	size  int32 // rows to return
	after int64 // the key of the last row of the previous page; 0 on the first page
}

// limit is what the query fetches: one row more than the page, so trimPage
// can tell whether another page follows.
func (p idPage) limit() int32 { return p.size + 1 }

// parseIDPage reads page_size and a one-key page_token.
func parseIDPage(size int32, token string) (idPage, error) {
	n, err := pageSize(size)
	if err != nil {
		return idPage{}, err
	}
	key, err := decodePageToken(token, 1)
	if err != nil {
		return idPage{}, err
	}
	p := idPage{size: n}
	if key != nil {
		if key[0] <= 0 {
			return idPage{}, invalid("page_token: not a token from this list")
		}
		p.after = key[0]
	}
	return p, nil
}

// pageOf finishes a one-key list: it trims rows fetched with pg.limit() to
// the page, maps each row with to, and returns the next page's token (keyed
// on the page's last row) or "" on the last page.
func pageOf[R, P any](pg idPage, rows []R, key func(R) int64, to func(R) P) ([]P, string) {
	rows, next := trimPage(rows, pg.size, func(r R) []int64 { return []int64{key(r)} })
	var out []P
	for _, r := range rows {
		out = append(out, to(r))
	}
	return out, next
}

// decodePageToken unpacks a token with n key parts; "" means the first page
// and yields nil.
func decodePageToken(token string, n int) ([]int64, error) {
	if token == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) != 1+8*n || int(b[0]) != n {
		return nil, invalid("page_token: not a token from this list")
	}
	key := make([]int64, n)
	for i := range key {
		key[i] = int64(binary.BigEndian.Uint64(b[1+8*i:]))
	}
	return key, nil
}

// The times a timePage token may carry: any time a row can have, and none
// PostgreSQL's timestamptz cannot hold (it ends in 294276 AD; Go's would
// overflow first). A token is opaque, so anything else is forged.
var (
	minPageTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxPageTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// decodeTimePageToken unpacks a (time in microseconds, id) token, for lists
// keyed on a timestamp and an id; "" means the first page and yields nil.
func decodeTimePageToken(token string) (*time.Time, int64, error) {
	key, err := decodePageToken(token, 2)
	if err != nil || key == nil {
		return nil, 0, err
	}
	at, err := pageTime(key[0], key[1])
	if err != nil {
		return nil, 0, err
	}
	return at, key[1], nil
}

// pageTime checks the (time in microseconds, id) part of a decoded token: a
// time PostgreSQL can compare and a positive id, or not a token of ours.
func pageTime(us, id int64) (*time.Time, error) {
	at := time.UnixMicro(us).UTC()
	if id <= 0 || at.Before(minPageTime) || at.After(maxPageTime) {
		return nil, invalid("page_token: not a token from this list")
	}
	return &at, nil
}

// trimPage takes rows fetched with LIMIT size+1 and returns the page and the
// token for the next one ("" on the last page), so a full last page never
// leads the client to an empty one.
func trimPage[T any](rows []T, size int32, key func(T) []int64) ([]T, string) {
	if int32(len(rows)) <= size {
		return rows, ""
	}
	rows = rows[:size]
	return rows, encodePageToken(key(rows[len(rows)-1])...)
}
