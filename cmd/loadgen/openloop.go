package main

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// lateAfter is how far behind its scheduled time a send may start before it
// counts as late: the load generator (or the machine) could not keep the
// offered rate, and latencies are then measured from a later start than a
// real client would have had (coordinated omission). Late sends are reported.
const lateAfter = 10 * time.Millisecond

// openLoop schedules send(i) at start + i/rate for i = 0, 1, … regardless of
// whether earlier sends completed, with at most maxInflight sends running.
// A send that cannot start within lateAfter of its time is counted late; one
// still waiting for a free slot when the duration ends never starts.
type openLoop struct {
	rate        float64
	duration    time.Duration
	maxMessages int
	maxInflight int
	send        func(ctx context.Context, i int)

	scheduled atomic.Int64 // due so far
	started   atomic.Int64
	late      atomic.Int64
}

// run blocks until the duration has passed (or ctx ends) and every started
// send has returned. It returns how many sends were due.
func (o *openLoop) run(ctx context.Context) int {
	start := time.Now()
	interval := time.Duration(float64(time.Second) / o.rate)
	tick := min(max(interval, time.Millisecond), 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	sem := make(chan struct{}, o.maxInflight)
	var wg sync.WaitGroup
	defer wg.Wait()
	next := 0
	for {
		elapsed := time.Since(start)
		if elapsed >= o.duration || ctx.Err() != nil {
			return next
		}
		due := min(int(math.Floor(elapsed.Seconds()*o.rate))+1, o.maxMessages)
		o.scheduled.Store(int64(due))
	dispatch:
		for next < due {
			select {
			case sem <- struct{}{}:
			default:
				break dispatch // every slot busy: retry at the next tick; these sends run late
			}
			i := next
			next++
			at := start.Add(time.Duration(float64(i) * float64(time.Second) / o.rate))
			if time.Since(at) > lateAfter {
				o.late.Add(1)
			}
			o.started.Add(1)
			wg.Go(func() {
				defer func() { <-sem }()
				o.send(ctx, i)
			})
		}
		if next >= o.maxMessages {
			// Count limit reached: wait out the duration so rates stay comparable.
			select {
			case <-ctx.Done():
			case <-time.After(o.duration - elapsed):
			}
			return next
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}
