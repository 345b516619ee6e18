package push

import (
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// encoding is the wire format a socket's client chose by subprotocol.
type encoding uint8

const (
	encProto      encoding = iota // SubprotocolProto, or none offered: one binary Event per message
	encJSON                       // SubprotocolJSON: one protojson Event per text message
	encProtoBatch                 // SubprotocolProtoBatch: one binary EventBatch per message
	encJSONBatch                  // SubprotocolJSONBatch: one protojson EventBatch per text message
)

// subprotocols maps every encoding subprotocol to its encoding, in the order
// handshake tries them (the client's order decides, not this one).
var subprotocols = [...]struct {
	name string
	enc  encoding
}{
	{SubprotocolProto, encProto},
	{SubprotocolJSON, encJSON},
	{SubprotocolProtoBatch, encProtoBatch},
	{SubprotocolJSONBatch, encJSONBatch},
}

// encodingOf returns the encoding named by a subprotocol (case-insensitive).
func encodingOf(subprotocol string) (encoding, bool) {
	for _, s := range subprotocols {
		if strings.EqualFold(subprotocol, s.name) {
			return s.enc, true
		}
	}
	return encProto, false
}

func (e encoding) json() bool    { return e == encJSON || e == encJSONBatch }
func (e encoding) batched() bool { return e == encProtoBatch || e == encJSONBatch }

func (e encoding) String() string {
	for _, s := range subprotocols {
		if s.enc == e {
			return s.name
		}
	}
	return "unknown"
}

// A batch is built from the events' own encodings, each computed once per
// frame and shared by every recipient, so the hub needs no generated types
// and encodes nothing twice:
//
//   - binary EventBatch (message EventBatch { repeated Event events = 1; }):
//     a repeated message field is, per element, the tag byte of field 1 with
//     wire type LEN (0x0a), the element's length as a varint, and its bytes.
//     The concatenation is the whole message.
//   - JSON EventBatch: {"events":[e1,e2,…]}, the events' protojson joined by
//     commas, which is exactly what protojson reads as an EventBatch.
const (
	batchFieldTag = byte(1<<3 | protowire.BytesType) // 0x0a
	jsonBatchOpen = `{"events":[`
	jsonBatchEnd  = `]}`
)

// batchCost is what one event of n encoded bytes adds to a batch: its tag
// and length prefix (binary) or the comma before it (JSON; the first event's
// comma pays for nothing, which only keeps the bound conservative).
func batchCost(json bool, n int) int {
	if json {
		return n + 1
	}
	return 1 + protowire.SizeVarint(uint64(n)) + n
}

// batchOverhead is the size of an empty batch.
func batchOverhead(json bool) int {
	if json {
		return len(jsonBatchOpen) + len(jsonBatchEnd)
	}
	return 0
}

// appendBatchEvent appends one encoded event to a batch being built: after
// the opening {"events":[ for JSON (which the caller writes, and the closing
// ]} after the last event).
func appendBatchEvent(b []byte, json, first bool, ev []byte) []byte {
	if json {
		if !first {
			b = append(b, ',')
		}
		return append(b, ev...)
	}
	b = append(b, batchFieldTag)
	b = protowire.AppendVarint(b, uint64(len(ev)))
	return append(b, ev...)
}

// batchBufs holds the buffers batches are built in. A writer takes one for
// the length of one write, so an idle socket holds none.
var batchBufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBatch keeps the pool from pinning the rare huge buffer (a batch
// of one event larger than BatchBytes).
const maxPooledBatch = 256 << 10

// clockBase anchors nanotime: a monotonic clock reading as a plain integer.
var clockBase = time.Now()

func nanotime() int64 { return int64(time.Since(clockBase)) }
