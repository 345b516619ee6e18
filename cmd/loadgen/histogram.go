package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram is a log-linear bucketed histogram of durations at microsecond
// resolution, in the spirit of HdrHistogram: values below 128 µs are exact,
// and every power of two above is cut into 128 equal buckets, so a reported
// value is at most 1/128 (0.8%) above the true one, from 1 µs to hours.
//
// Record is safe for concurrent use (atomic counters, no lock); readers see
// a value recorded concurrently or not, never a torn state that matters.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	total  atomic.Uint64
	max    atomic.Uint64 // µs, exact
	min    atomic.Uint64 // µs, exact; valid once total > 0 (stored as value+1, 0 = unset)
}

const (
	subBits    = 7
	subCount   = 1 << subBits // linear buckets per power of two
	numBuckets = subCount + (64-subBits)*subCount
)

// bucketOf returns the bucket index of v (µs).
func bucketOf(v uint64) int {
	if v < subCount {
		return int(v)
	}
	k := bits.Len64(v) - 1 // v in [2^k, 2^(k+1)), k >= subBits
	shift := k - subBits
	sub := int(v>>shift) - subCount // in [0, subCount)
	return subCount + shift*subCount + sub
}

// bucketHigh returns the highest value (µs) that falls into bucket i.
func bucketHigh(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	j := i - subCount
	shift := j / subCount
	sub := uint64(j % subCount)
	low := (subCount + sub) << shift
	return low + (1 << shift) - 1
}

// Record adds one observation; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d.Microseconds(), 0))
	h.counts[bucketOf(v)].Add(1)
	h.total.Add(1)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
	for {
		m := h.min.Load()
		if (m != 0 && v+1 >= m) || h.min.CompareAndSwap(m, v+1) {
			break
		}
	}
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Max is the largest observation (0 when empty).
func (h *Histogram) Max() time.Duration {
	return time.Duration(h.max.Load()) * time.Microsecond
}

// Min is the smallest observation (0 when empty).
func (h *Histogram) Min() time.Duration {
	m := h.min.Load()
	if m == 0 {
		return 0
	}
	return time.Duration(m-1) * time.Microsecond
}

// Quantile returns the value at quantile q in [0, 1]: the highest value of
// the bucket that holds the ceil(q*count)-th observation, capped at Max.
// It returns 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.total.Load()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(q*float64(n) + 0.5)
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			v := min(bucketHigh(i), h.max.Load())
			return time.Duration(v) * time.Microsecond
		}
	}
	return h.Max()
}

// Merge adds every observation of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.total.Add(o.total.Load())
	if m := o.max.Load(); m > 0 || o.total.Load() > 0 {
		for {
			cur := h.max.Load()
			if m <= cur || h.max.CompareAndSwap(cur, m) {
				break
			}
		}
	}
	if m := o.min.Load(); m != 0 {
		for {
			cur := h.min.Load()
			if (cur != 0 && m >= cur) || h.min.CompareAndSwap(cur, m) {
				break
			}
		}
	}
}

// Summary is the usual set of quantiles of a histogram.
type Summary struct {
	Count                    uint64
	P50, P90, P99, P999, Max time.Duration
}

// Summary reads the quantiles that reports show.
func (h *Histogram) Summary() Summary {
	return Summary{
		Count: h.Count(),
		P50:   h.Quantile(0.50), P90: h.Quantile(0.90), P99: h.Quantile(0.99),
		P999: h.Quantile(0.999), Max: h.Max(),
	}
}
