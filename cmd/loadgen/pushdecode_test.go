package main

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

type recordingSink struct {
	got   []string
	other int
}

func (r *recordingSink) message(p pushed) {
	r.got = append(r.got, fmt.Sprintf("%d/%d/%d/%s", p.conv, p.seq, p.sender, p.clientMsgID))
}
func (r *recordingSink) otherEvent() { r.other++ }

// TestDecoders: the in-place decoders read from what the generated code
// writes — every subprotocol, message events among others, fields the
// accounting skips included — the same ids the generated code would.
func TestDecoders(t *testing.T) {
	t.Parallel()
	evs := []*v1.Event{
		{At: timestamppb.Now(), Kind: &v1.Event_Message{Message: &v1.Message{
			ConversationId: 7, Seq: 1, SenderId: 3, ClientMsgId: "lgx-0",
			Content: &v1.Message_Text{Text: "héllo"}, SentAt: timestamppb.Now(),
		}}},
		{Kind: &v1.Event_Typing{Typing: &v1.Typing{ConversationId: 7, MemberId: 3}}},
		{At: timestamppb.Now(), Kind: &v1.Event_Message{Message: &v1.Message{
			ConversationId: 1 << 40, Seq: 300, SenderId: 1 << 35, ClientMsgId: "lgx-12345",
			Content: &v1.Message_Attachment{Attachment: &v1.Attachment{Id: 9, Kind: v1.AttachmentKind_ATTACHMENT_KIND_IMAGE}},
		}}},
	}
	want := []string{"7/1/3/lgx-0", fmt.Sprintf("%d/300/%d/lgx-12345", int64(1)<<40, int64(1)<<35)}
	batch := &v1.EventBatch{Events: evs}

	run := func(name string, dec decoder, msgs ...[]byte) {
		t.Run(name, func(t *testing.T) {
			var r recordingSink
			for _, m := range msgs {
				if err := dec(m, &r); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(r.got, want) || r.other != 1 {
				t.Errorf("got %q and %d other events; want %q and 1", r.got, r.other, want)
			}
		})
	}
	var bin, js [][]byte
	for _, ev := range evs {
		b, _ := proto.Marshal(ev)
		bin = append(bin, b)
		j, _ := protojson.Marshal(ev)
		js = append(js, j)
	}
	bb, _ := proto.Marshal(batch)
	jb, _ := protojson.Marshal(batch)
	run("proto", decoderFor(pushEncodings["proto"]), bin...)
	run("json", decoderFor(pushEncodings["json"]), js...)
	run("proto.batch", decoderFor(pushEncodings["proto.batch"]), bb)
	run("json.batch", decoderFor(pushEncodings["json.batch"]), jb)

	for _, bad := range [][]byte{{0x0a, 0x05, 0x52}, {0x52, 0x10, 0x08}} {
		if err := decodeBinaryBatch(bad, &recordingSink{}); err == nil {
			t.Errorf("truncated batch %x decoded", bad)
		}
	}
	if err := decodeBinaryBatch(nil, &recordingSink{}); err == nil {
		t.Error("empty batch decoded")
	}
}
