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

// keyedLimiter keeps one token bucket per key (a client address, a phone, a
// member id). Idle buckets are swept so the map cannot grow without bound.
type keyedLimiter[K comparable] struct {
	limit RateLimit
	mu    sync.Mutex
	m     map[K]*bucket
	swept time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newKeyedLimiter[K comparable](l RateLimit) *keyedLimiter[K] {
	return &keyedLimiter[K]{limit: l, m: make(map[K]*bucket)}
}

// allow takes one token for key and reports whether there was one.
func (k *keyedLimiter[K]) allow(key K, now time.Time) bool {
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
