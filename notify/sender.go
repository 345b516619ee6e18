// Package notify delivers events to HTTP webhooks: offline notifications
// (Webhook, a Notifier that coalesces bursts per member) and integration
// events (Events), both through one signed, retrying Sender and a bounded
// Queue that never blocks the caller. Package server decides what to send;
// this package knows nothing of the API's types.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// The headers of every delivery. The signature is "v1=" and the hex
// HMAC-SHA256, keyed with the shared secret, of the timestamp, a dot and the
// body: a receiver recomputes it (Verify), compares in constant time and
// refuses old timestamps, so a captured request cannot be replayed later.
const (
	HeaderTimestamp = "X-KarlMalone-Timestamp"
	HeaderSignature = "X-KarlMalone-Signature"
)

// Config holds a webhook's tunables; zero fields take DefaultConfig's.
type Config struct {
	// URL receives the POSTs; Secret signs them.
	URL, Secret string
	// QueueSize bounds the deliveries waiting; past it new ones are dropped
	// (and counted), never waited for.
	QueueSize int
	// Workers deliver concurrently.
	Workers int
	// Attempts is how many times one delivery is tried (5xx, 429 and network
	// errors are retried; other answers are final).
	Attempts int
	// Backoff is the wait before the first retry; it doubles up to MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// Timeout bounds one attempt.
	Timeout time.Duration
}

// DefaultConfig returns the defaults; the command's flags take theirs from here.
func DefaultConfig() Config {
	return Config{
		QueueSize: 10_000, Workers: 4, Attempts: 5,
		Backoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second, Timeout: 10 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	for _, f := range []struct{ v, d *int }{{&c.QueueSize, &d.QueueSize}, {&c.Workers, &d.Workers}, {&c.Attempts, &d.Attempts}} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	for _, f := range []struct{ v, d *time.Duration }{{&c.Backoff, &d.Backoff}, {&c.MaxBackoff, &d.MaxBackoff}, {&c.Timeout, &d.Timeout}} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	return c
}

// Sender POSTs signed JSON bodies to one URL, retrying with backoff.
type Sender struct {
	cfg    Config
	client *http.Client
	now    func() time.Time
}

// NewSender returns a sender for cfg.URL; client nil means http.DefaultClient.
func NewSender(cfg Config, client *http.Client) *Sender {
	if client == nil {
		client = http.DefaultClient
	}
	return &Sender{cfg: cfg.withDefaults(), client: client, now: time.Now}
}

// errFinal marks an answer that retrying would not change.
var errFinal = errors.New("refused")

// Deliver POSTs body until an attempt succeeds (2xx), the answer is final,
// the attempts run out or ctx ends.
func (s *Sender) Deliver(ctx context.Context, body []byte) error {
	wait := s.cfg.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		if err = s.post(ctx, body); err == nil || errors.Is(err, errFinal) || attempt == s.cfg.Attempts {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, s.cfg.MaxBackoff)
	}
}

func (s *Sender) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %w", errFinal, err)
	}
	ts := strconv.FormatInt(s.now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "KarlMalone-Webhook/1")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(s.cfg.Secret, ts, body))
	res, err := s.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10)) // reuse the connection
	res.Body.Close()
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
		return nil
	case res.StatusCode >= 500 || res.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("webhook answered %s", res.Status)
	}
	return fmt.Errorf("%w: webhook answered %s", errFinal, res.Status)
}

// Sign is the signature header's value for a body sent at timestamp ts.
func Sign(secret, ts string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify reports whether sig is body's signature at ts, in constant time.
func Verify(secret, ts, sig string, body []byte) bool {
	return hmac.Equal([]byte(sig), []byte(Sign(secret, ts, body)))
}
