package server

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimit is a token bucket: Burst requests at once, refilled at Every.
// A zero RateLimit disables the limit.
type RateLimit struct {
	Every time.Duration
	Burst int
}

// keyedLimiter keeps one token bucket per key (a client address or a phone).
// Idle buckets are swept so the map cannot grow without bound.
type keyedLimiter struct {
	limit RateLimit
	mu    sync.Mutex
	m     map[string]*bucket
	swept time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newKeyedLimiter(l RateLimit) *keyedLimiter {
	return &keyedLimiter{limit: l, m: make(map[string]*bucket)}
}

// allow takes one token for key and reports whether there was one.
func (k *keyedLimiter) allow(key string, now time.Time) bool {
	if k.limit.Every <= 0 || k.limit.Burst <= 0 {
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	// A bucket idle for Burst*Every is full again: dropping it changes nothing.
	idle := time.Duration(k.limit.Burst) * k.limit.Every
	if now.Sub(k.swept) > idle {
		for key, b := range k.m {
			if now.Sub(b.seen) > idle {
				delete(k.m, key)
			}
		}
		k.swept = now
	}
	b, ok := k.m[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(rate.Every(k.limit.Every), k.limit.Burst)}
		k.m[key] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}
