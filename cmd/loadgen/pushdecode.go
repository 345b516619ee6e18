package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// pushed is what the accounting needs of one message event, read in place
// from a WebSocket message.
type pushed struct {
	conv, seq, sender int64
	clientMsgID       []byte // aliases the read buffer: valid only during the call
}

// pushSink receives the decoded events of one socket's messages.
type pushSink interface {
	message(p pushed)
	otherEvent()
}

// decoder decodes one WebSocket message of a subprotocol.
type decoder func(b []byte, sink pushSink) error

func decoderFor(subprotocol string) decoder {
	switch subprotocol {
	case pushEncodings["proto.batch"]:
		return decodeBinaryBatch
	case pushEncodings["json"]:
		return decodeJSONEvent
	case pushEncodings["json.batch"]:
		return decodeJSONBatch
	default:
		return decodeBinaryEvent
	}
}

// Field numbers of the wire formats read here (proto/karlmalone/v1).
const (
	fieldBatchEvents   = 1  // EventBatch.events
	fieldEventMessage  = 10 // Event.message
	fieldMessageConv   = 1  // Message.conversation_id
	fieldMessageSeq    = 2  // Message.seq
	fieldMessageSender = 3  // Message.sender_id
	fieldMessageCMID   = 4  // Message.client_msg_id
)

var errTruncated = errors.New("truncated protobuf")

// decodeBinaryBatch reads an EventBatch: events are field 1, each a
// length-delimited Event.
func decodeBinaryBatch(b []byte, sink pushSink) error {
	n := 0
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return errTruncated
		}
		b = b[k:]
		if num == fieldBatchEvents && typ == protowire.BytesType {
			ev, k := protowire.ConsumeBytes(b)
			if k < 0 {
				return errTruncated
			}
			if err := decodeBinaryEvent(ev, sink); err != nil {
				return err
			}
			b = b[k:]
			n++
			continue
		}
		k = protowire.ConsumeFieldValue(num, typ, b)
		if k < 0 {
			return errTruncated
		}
		b = b[k:]
	}
	if n == 0 {
		return errors.New("empty EventBatch")
	}
	return nil
}

// decodeBinaryEvent reads an Event, and of it only a message's ids.
func decodeBinaryEvent(b []byte, sink pushSink) error {
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return errTruncated
		}
		b = b[k:]
		if num == fieldEventMessage && typ == protowire.BytesType {
			m, k := protowire.ConsumeBytes(b)
			if k < 0 {
				return errTruncated
			}
			p, err := decodeBinaryMessage(m)
			if err != nil {
				return err
			}
			sink.message(p)
			return nil // a oneof: nothing else matters
		}
		k = protowire.ConsumeFieldValue(num, typ, b)
		if k < 0 {
			return errTruncated
		}
		b = b[k:]
	}
	sink.otherEvent()
	return nil
}

func decodeBinaryMessage(b []byte) (pushed, error) {
	var p pushed
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return p, errTruncated
		}
		b = b[k:]
		switch {
		case typ == protowire.VarintType && (num == fieldMessageConv || num == fieldMessageSeq || num == fieldMessageSender):
			v, k := protowire.ConsumeVarint(b)
			if k < 0 {
				return p, errTruncated
			}
			switch num {
			case fieldMessageConv:
				p.conv = int64(v)
			case fieldMessageSeq:
				p.seq = int64(v)
			default:
				p.sender = int64(v)
			}
			b = b[k:]
		case typ == protowire.BytesType && num == fieldMessageCMID:
			v, k := protowire.ConsumeBytes(b)
			if k < 0 {
				return p, errTruncated
			}
			p.clientMsgID = v
			b = b[k:]
		default:
			k = protowire.ConsumeFieldValue(num, typ, b)
			if k < 0 {
				return p, errTruncated
			}
			b = b[k:]
		}
	}
	return p, nil
}

// jsonEvent is the part of a protojson Event the accounting reads (int64s
// are JSON strings in protojson).
type jsonEvent struct {
	Message *struct {
		ConversationID int64  `json:"conversationId,string"`
		Seq            int64  `json:"seq,string"`
		SenderID       int64  `json:"senderId,string"`
		ClientMsgID    string `json:"clientMsgId"`
	} `json:"message"`
}

func (e *jsonEvent) deliver(sink pushSink) {
	if e.Message == nil {
		sink.otherEvent()
		return
	}
	m := e.Message
	sink.message(pushed{conv: m.ConversationID, seq: m.Seq, sender: m.SenderID, clientMsgID: []byte(m.ClientMsgID)})
}

func decodeJSONEvent(b []byte, sink pushSink) error {
	var ev jsonEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		return fmt.Errorf("json event: %w", err)
	}
	ev.deliver(sink)
	return nil
}

func decodeJSONBatch(b []byte, sink pushSink) error {
	var batch struct {
		Events []jsonEvent `json:"events"`
	}
	if err := json.Unmarshal(b, &batch); err != nil {
		return fmt.Errorf("json batch: %w", err)
	}
	if len(batch.Events) == 0 {
		return errors.New("empty EventBatch")
	}
	for i := range batch.Events {
		batch.Events[i].deliver(sink)
	}
	return nil
}
