package server

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/push"
)

// PushEvents fills in what the push hub needs to know of this API's event
// type (the push package knows none): how to decode the events that other
// nodes send, and the notice that tells clients to resync after the bus
// between nodes was down.
func PushEvents(cfg push.Config) push.Config {
	cfg.NewEvent = func() proto.Message { return new(v1.Event) }
	cfg.ResyncEvent = func(since time.Time) proto.Message {
		return &v1.Event{At: timestamppb.Now(), Kind: &v1.Event_Resync{Resync: &v1.Resync{Since: timestamppb.New(since)}}}
	}
	return cfg
}
