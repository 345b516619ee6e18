package server

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// RateLimit is a token bucket: Burst requests at once, refilled at Every.
// A zero RateLimit disables the limit.
type RateLimit struct {
	Every time.Duration
	Burst int
}

func (l RateLimit) off() bool { return l.Every <= 0 || l.Burst <= 0 }

// keyedLimiter keeps one token bucket per key (a client address, a phone, a
// member id). Idle buckets are swept so the map cannot grow without bound.
type keyedLimiter[K comparable] struct {
	limit RateLimit
	mu    sync.Mutex
	m     map[K]*bucket
	swept time.Time
}

// bucket holds tokens as of last. Its own (not x/time/rate's) so that a
// token can be given back: limits that count failures take a token before
// the attempt, so concurrent attempts cannot all slip past the check, and
// refund it when the attempt succeeds.
type bucket struct {
	tokens float64
	last   time.Time
}

func newKeyedLimiter[K comparable](l RateLimit) *keyedLimiter[K] {
	return &keyedLimiter[K]{limit: l, m: make(map[K]*bucket)}
}

// allow takes one token for key and reports whether there was one.
func (k *keyedLimiter[K]) allow(key K, now time.Time) bool {
	if k.limit.off() {
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.get(key, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// refund gives back a token allow took for key (the attempt did not count).
func (k *keyedLimiter[K]) refund(key K, now time.Time) {
	if k.limit.off() {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.get(key, now)
	b.tokens = min(b.tokens+1, float64(k.limit.Burst))
}

// get returns key's bucket refilled up to now. The caller holds k.mu.
func (k *keyedLimiter[K]) get(key K, now time.Time) *bucket {
	// A bucket idle for Burst*Every is full again: dropping it changes nothing.
	idle := time.Duration(k.limit.Burst) * k.limit.Every
	if now.Sub(k.swept) > idle {
		for key, b := range k.m {
			if now.Sub(b.last) > idle {
				delete(k.m, key)
			}
		}
		k.swept = now
	}
	b, ok := k.m[key]
	if !ok {
		b = &bucket{tokens: float64(k.limit.Burst), last: now}
		k.m[key] = b
	}
	if now.After(b.last) {
		b.tokens = min(float64(k.limit.Burst), b.tokens+float64(now.Sub(b.last))/float64(k.limit.Every))
		b.last = now
	}
	return b
}

// clientKey is the key of the caller's address for per-client limits: the
// address the request came from, or the client a trusted proxy names in
// X-Forwarded-For (clientIP), with IPv6 addresses bucketed by /64 (addrKey).
func (b *base) clientKey(ctx context.Context) string {
	info, ok := connect.CallInfoForHandlerContext(ctx)
	if !ok {
		return ""
	}
	return addrKey(clientIP(info.Peer().Addr, info.RequestHeader().Values("X-Forwarded-For"), b.cfg.TrustedProxies))
}

// clientIP is the client's address: the peer's, unless the peer is a
// trusted proxy, in which case X-Forwarded-For is read from the right (the
// entry the nearest proxy appended) past every trusted proxy; the first
// address that is not one is the client. Entries further left were written
// by the client itself and could say anything.
func clientIP(peer string, xff []string, trusted []netip.Prefix) netip.Addr {
	addr := parseAddr(peer)
	if !isTrusted(addr, trusted) {
		return addr
	}
	var hops []string
	for _, h := range xff {
		hops = append(hops, strings.Split(h, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop := parseAddr(strings.TrimSpace(hops[i]))
		if !hop.IsValid() {
			break // garbage: trust nothing further left
		}
		addr = hop
		if !isTrusted(hop, trusted) {
			break
		}
	}
	return addr
}

// parseAddr reads "host:port" or a bare address; the zero Addr if neither.
func parseAddr(s string) netip.Addr {
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// addrKey buckets an address for rate limits: an IPv4 address stands for
// itself, an IPv6 address for its /64, which one subscriber usually holds
// whole (so stepping through it buys an attacker nothing).
func addrKey(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return ""
	case a.Is4():
		return a.String()
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}
