package server

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/karlmalone/karlmalone/gen/db"
	"github.com/karlmalone/karlmalone/push"
)

// sessionCache remembers token → session for a short time, so that an
// authenticated call does not pay a database round trip (GetSessionByTokenHash)
// every time. It is safe because every revocation reaches it: Logout,
// RevokeSession and ChangePassword go through push.Hub.CloseSession on the
// node that served them, and over the bus to every other node
// (push.Hub.WatchSessions). What the bus cannot promise, the cache makes up
// for:
//
//   - While the bus is disconnected, revocations on other nodes go unheard:
//     the cache is bypassed (every call reads the database, as without a
//     cache), and emptied when the bus is back.
//   - An entry lives at most TTL: the bound on how long a revocation can go
//     unnoticed in the worst case (NATS silently lost, not yet detected).
//   - A session is refused from its expires_at on, by this node's clock,
//     whether cached or not.
//   - A revocation that runs while a call is reading the session from the
//     database wins: the read is not cached (generation check).
//
// Keys are the tokens' SHA-256 (as stored), never the tokens.
type sessionCache struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	entries map[[32]byte]cachedSession
	bySess  map[int64][32]byte
	gen     uint64 // bumped by every revocation and flush, under mu

	trusted atomic.Bool // the bus is connected (or there is none)
	hits    atomic.Uint64
	misses  atomic.Uint64
}

type cachedSession struct {
	s       db.Session
	goodTil time.Time // cached until (the cache's TTL), by this node's clock
}

func newSessionCache(size int, ttl time.Duration, hub *push.Hub) *sessionCache {
	c := &sessionCache{
		ttl: ttl, max: size,
		entries: make(map[[32]byte]cachedSession),
		bySess:  make(map[int64][32]byte),
	}
	c.trusted.Store(hub.WatchSessions(push.SessionWatch{
		Revoked: c.forget,
		BusDown: func() { c.trusted.Store(false); c.flush() },
		BusUp:   func() { c.flush(); c.trusted.Store(true) },
	}))
	return c
}

// get returns the cached live session for hash. found is false on a miss;
// gen is then what put needs.
func (c *sessionCache) get(hash []byte, now time.Time) (s db.Session, found bool, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := [32]byte(hash)
	e, ok := c.entries[key]
	if ok && now.Before(e.goodTil) && now.Before(e.s.ExpiresAt) && c.trusted.Load() {
		c.hits.Add(1)
		return e.s, true, c.gen
	}
	if ok {
		c.remove(key, e.s.ID)
	}
	c.misses.Add(1)
	return db.Session{}, false, c.gen
}

// put caches s, read from the database while the cache was at generation
// gen; it does nothing if a revocation or flush ran since.
func (c *sessionCache) put(hash []byte, s db.Session, gen uint64, now time.Time) {
	if !c.trusted.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.entries) >= c.max {
		// Evict any one entry (map order is random): cheaper than an LRU
		// list, and a miss costs only the round trip the cache saves.
		for k, e := range c.entries {
			c.remove(k, e.s.ID)
			break
		}
	}
	key := [32]byte(hash)
	c.entries[key] = cachedSession{s: s, goodTil: now.Add(c.ttl)}
	c.bySess[s.ID] = key
}

// forget drops a revoked session.
func (c *sessionCache) forget(sessionID int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if key, ok := c.bySess[sessionID]; ok {
		c.remove(key, sessionID)
	}
}

// flush drops everything.
func (c *sessionCache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
	clear(c.bySess)
}

// remove drops one entry; c.mu is held.
func (c *sessionCache) remove(key [32]byte, sessionID int64) {
	delete(c.entries, key)
	delete(c.bySess, sessionID)
}

// size is how many sessions are cached.
func (c *sessionCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

var (
	descSessionCacheHits = prometheus.NewDesc("karlmalone_session_cache_hits_total",
		"Authenticated calls answered from this node's session cache.", nil, nil)
	descSessionCacheMisses = prometheus.NewDesc("karlmalone_session_cache_misses_total",
		"Authenticated calls that read the session from the database.", nil, nil)
	descSessionCacheEntries = prometheus.NewDesc("karlmalone_session_cache_entries",
		"Sessions in this node's cache.", nil, nil)
)

// Describe and Collect make the cache a Prometheus collector (/metrics).
func (c *sessionCache) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSessionCacheHits
	ch <- descSessionCacheMisses
	ch <- descSessionCacheEntries
}

func (c *sessionCache) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descSessionCacheHits, prometheus.CounterValue, float64(c.hits.Load()))
	ch <- prometheus.MustNewConstMetric(descSessionCacheMisses, prometheus.CounterValue, float64(c.misses.Load()))
	ch <- prometheus.MustNewConstMetric(descSessionCacheEntries, prometheus.GaugeValue, float64(c.size()))
}
