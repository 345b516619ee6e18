package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	t.Parallel()
	// Each value falls into a bucket whose range holds it, buckets are
	// contiguous and increasing, and a bucket is at most 1/128 of its values wide.
	prevHigh := uint64(0)
	for i := 0; i < numBuckets; i++ {
		high := bucketHigh(i)
		if i > 0 && high <= prevHigh {
			t.Fatalf("bucket %d high %d <= previous %d", i, high, prevHigh)
		}
		if got := bucketOf(high); got != i {
			t.Fatalf("bucketOf(bucketHigh(%d)=%d) = %d", i, high, got)
		}
		if i > 0 {
			low := prevHigh + 1
			if got := bucketOf(low); got != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", low, got, i)
			}
			if width := high - low + 1; low >= subCount && float64(width)/float64(low) > 1.0/subCount+1e-12 {
				t.Fatalf("bucket %d [%d,%d] too wide", i, low, high)
			}
		}
		prevHigh = high
	}
	if prevHigh != math.MaxUint64 {
		t.Fatalf("last bucket ends at %d, want MaxUint64", prevHigh)
	}
}

func TestExactBelow128us(t *testing.T) {
	t.Parallel()
	var h Histogram
	for v := range 100 {
		h.Record(time.Duration(v+1) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Microsecond}, {0.9, 90 * time.Microsecond}, {0.99, 99 * time.Microsecond}, {1, 100 * time.Microsecond}, {0, time.Microsecond}} {
		if got := h.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if h.Min() != time.Microsecond || h.Max() != 100*time.Microsecond || h.Count() != 100 {
		t.Errorf("min %v max %v count %d", h.Min(), h.Max(), h.Count())
	}
}

func TestQuantilesWithinRelativeError(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	vals := make([]time.Duration, 100_000)
	for i := range vals {
		// Log-uniform from 1 µs to 60 s.
		v := time.Duration(math.Exp(r.Float64()*math.Log(60e6))) * time.Microsecond
		vals[i] = v
		h.Record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/subCount+float64(time.Microsecond) {
			t.Errorf("p%v = %v, exact %v", q*100, got, exact)
		}
	}
	if h.Max() != vals[len(vals)-1].Truncate(time.Microsecond) {
		t.Errorf("max %v, want %v", h.Max(), vals[len(vals)-1])
	}
}

func TestEmptyAndNegative(t *testing.T) {
	t.Parallel()
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Max() != 0 || h.Min() != 0 {
		t.Fatal("empty histogram must read 0")
	}
	h.Record(-time.Second)
	if h.Count() != 1 || h.Max() != 0 || h.Quantile(0.5) != 0 {
		t.Fatalf("negative: count %d max %v", h.Count(), h.Max())
	}
	h.Record(2 * time.Hour) // beyond the range anyone needs, still exact max
	if h.Max() != 2*time.Hour || h.Quantile(1) != 2*time.Hour {
		t.Fatalf("2h: max %v p100 %v", h.Max(), h.Quantile(1))
	}
}

func TestConcurrentRecordAndMerge(t *testing.T) {
	t.Parallel()
	var a, b Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10_000 {
				a.Record(time.Duration(g*10_000+i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	b.Record(5 * time.Hour)
	b.Merge(&a)
	if a.Count() != 80_000 || a.Max() != 79_999*time.Microsecond || a.Min() != 0 {
		t.Fatalf("a: count %d max %v min %v", a.Count(), a.Max(), a.Min())
	}
	if b.Count() != 80_001 || b.Max() != 5*time.Hour || b.Min() != 0 {
		t.Fatalf("b: count %d max %v min %v", b.Count(), b.Max(), b.Min())
	}
	if p := a.Quantile(0.5); p < 39_999*time.Microsecond || p > 40_400*time.Microsecond {
		t.Fatalf("p50 %v", p)
	}
}
