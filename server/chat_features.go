package server

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/store"
)

// The message features of ChatService beyond sending and reading: forwards,
// edits, reactions and per-member conversation settings
// (docs/CHAT-FEATURES.md). Replies and mentions ride on SendMessage (chat.go).

type forwardMessageParams struct {
	ConversationID int64  `name:"conversation_id" validate:"gt=0"`
	Seq            int64  `name:"seq" validate:"gt=0"`
	PeerID         *int64 `name:"peer_id" validate:"omitnil,gt=0"`
	GroupID        *int64 `name:"group_id" validate:"omitnil,gt=0"`
	ClientMsgID    string `name:"client_msg_id" validate:"text,required,max=64"`
}

// ForwardMessage copies a message the caller can read into a conversation it
// may post in, through the send path (rate limit, pipeline, idempotency). An
// attachment is shared, not copied: the copy carries the same attachment id,
// which the new conversation's members may then download (CanReadAttachment).
func (s *ChatServer) ForwardMessage(ctx context.Context, req *v1.ForwardMessageRequest) (*v1.ForwardMessageResponse, error) {
	me := callerFrom(ctx).MemberID
	if !s.sendLimiter.allow(me, s.now()) {
		return nil, errSendRateLimited
	}
	fp := forwardMessageParams{ConversationID: req.GetConversationId(), Seq: req.GetSeq(), ClientMsgID: req.GetClientMsgId()}
	switch t := req.GetTarget().(type) {
	case *v1.ForwardMessageRequest_PeerId:
		fp.PeerID = &t.PeerId
	case *v1.ForwardMessageRequest_GroupId:
		fp.GroupID = &t.GroupId
	default:
		return nil, invalid("target: set peer_id or group_id")
	}
	if err := check(fp); err != nil {
		return nil, err
	}
	src, err := s.q.GetMessageForMember(ctx, db.GetMessageForMemberParams{ConversationID: fp.ConversationID, Seq: fp.Seq, MemberID: me})
	if err != nil {
		return nil, fmt.Errorf("get message to forward: %w", err)
	}
	m := src.Message
	if m.RecalledAt != nil {
		return nil, errForwardRecalled
	}
	arg := db.CreateMessageParams{
		PeerID: fp.PeerID, GroupID: fp.GroupID, SenderID: me, ClientMsgID: fp.ClientMsgID, Forwarded: true,
		Body: m.Body, AttachmentID: m.AttachmentID, AttachmentKind: m.AttachmentKind, Caption: m.Caption,
	}
	var att *db.Attachment
	if m.AttachmentID != nil {
		att = &db.Attachment{ID: *m.AttachmentID, ContentType: deref(src.AttachmentContentType), Size: deref(src.AttachmentSize)}
	}
	res, err := s.send(ctx, me, sendMessageParams{PeerID: fp.PeerID, GroupID: fp.GroupID, ClientMsgID: fp.ClientMsgID}, arg, att, quoted{})
	if err != nil {
		return nil, err
	}
	return &v1.ForwardMessageResponse{Message: res.GetMessage()}, nil
}

type editMessageParams struct {
	ConversationID int64  `name:"conversation_id" validate:"gt=0"`
	Seq            int64  `name:"seq" validate:"gt=0"`
	Text           string `name:"text" validate:"text,min=1,max=4000"`
}

// EditMessage replaces the text of the caller's text message within the
// edit window. Only the current text is kept: earlier versions are gone for
// everyone, the sender included (docs/CHAT-FEATURES.md).
func (s *ChatServer) EditMessage(ctx context.Context, req *v1.EditMessageRequest) (*v1.EditMessageResponse, error) {
	me := callerFrom(ctx).MemberID
	p := editMessageParams{ConversationID: req.GetConversationId(), Seq: req.GetSeq(), Text: req.GetText()}
	if err := check(p); err != nil {
		return nil, err
	}
	if err := checkText("text", p.Text); err != nil {
		return nil, err
	}
	m, err := s.q.EditMessage(ctx, db.EditMessageParams{
		ConversationID: p.ConversationID, Seq: p.Seq, SenderID: me, Body: &p.Text, WindowMicros: s.cfg.EditWindow.Microseconds(),
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, s.notEdited(ctx, me, p)
	}
	if err != nil {
		return nil, fmt.Errorf("edit message: %w", err)
	}
	if err := s.publishToConversation(ctx, p.ConversationID, 0, messageEdited(toMessage(m, nil, nil, quoted{}))); err != nil {
		return nil, err
	}
	// Read it back whole (attachment-free, but maybe a reply with its quote).
	r, err := s.q.GetMessageForMember(ctx, db.GetMessageForMemberParams{ConversationID: p.ConversationID, Seq: p.Seq, MemberID: me})
	if err != nil {
		return nil, fmt.Errorf("get edited message: %w", err)
	}
	return &v1.EditMessageResponse{Message: toReadMessage(r)}, nil
}

// notEdited explains an edit that changed nothing.
func (s *ChatServer) notEdited(ctx context.Context, me int64, p editMessageParams) error {
	r, err := s.q.GetMessageForMember(ctx, db.GetMessageForMemberParams{ConversationID: p.ConversationID, Seq: p.Seq, MemberID: me})
	switch {
	case err != nil:
		return fmt.Errorf("get message: %w", err)
	case r.Message.SenderID != me:
		return connect.NewError(connect.CodePermissionDenied, errors.New("only the sender may edit a message"))
	case r.Message.RecalledAt != nil:
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("a recalled message cannot be edited"))
	case r.Message.Body == nil || r.Message.Forwarded:
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("only a text message of your own can be edited (not an attachment, not a forwarded copy)"))
	default:
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("the edit window (%s) has passed", s.cfg.EditWindow))
	}
}

// SetReaction sets, replaces or clears the caller's one reaction to a
// message, and pushes the change to the conversation's members (the
// caller's other devices included) when something changed.
func (s *ChatServer) SetReaction(ctx context.Context, req *v1.SetReactionRequest) (*v1.SetReactionResponse, error) {
	me := callerFrom(ctx).MemberID
	p := messageRefParams{ConversationID: req.GetConversationId(), Seq: req.GetSeq()}
	if err := check(p); err != nil {
		return nil, err
	}
	emoji := req.GetEmoji()
	if emoji != "" && !isSingleEmoji(emoji) {
		return nil, invalid("emoji: must be a single emoji of at most %d bytes, or empty to clear", maxEmojiBytes)
	}
	var ev *v1.ReactionChanged
	if emoji == "" {
		prev, err := s.q.ClearReaction(ctx, db.ClearReactionParams{ConversationID: p.ConversationID, Seq: p.Seq, MemberID: me})
		switch {
		case errors.Is(err, store.ErrNotFound):
			// Nothing to clear (a retry, say): fine if the caller may see
			// the message, without an event.
			if _, err := s.q.GetMessageForMember(ctx, db.GetMessageForMemberParams{ConversationID: p.ConversationID, Seq: p.Seq, MemberID: me}); err != nil {
				return nil, fmt.Errorf("get message: %w", err)
			}
		case err != nil:
			return nil, fmt.Errorf("clear reaction: %w", err)
		default:
			ev = &v1.ReactionChanged{PreviousEmoji: prev}
		}
	} else {
		r, err := s.q.SetReaction(ctx, db.SetReactionParams{ConversationID: p.ConversationID, Seq: p.Seq, MemberID: me, Emoji: emoji})
		if errors.Is(err, store.ErrNotFound) {
			return nil, s.notReactable(ctx, me, p)
		}
		if err != nil {
			return nil, fmt.Errorf("set reaction: %w", err)
		}
		if r.PreviousEmoji != r.Emoji {
			ev = &v1.ReactionChanged{Emoji: r.Emoji, PreviousEmoji: r.PreviousEmoji}
		}
	}
	if ev != nil {
		ev.ConversationId, ev.Seq, ev.MemberId = p.ConversationID, p.Seq, me
		if err := s.publishToConversation(ctx, p.ConversationID, 0, reactionChanged(ev)); err != nil {
			return nil, err
		}
	}
	counts, err := s.reactionCounts(ctx, me, p.ConversationID, []int64{p.Seq})
	if err != nil {
		return nil, err
	}
	return &v1.SetReactionResponse{Reactions: counts[p.Seq]}, nil
}

// notReactable explains a reaction that was not stored.
func (s *ChatServer) notReactable(ctx context.Context, me int64, p messageRefParams) error {
	r, err := s.q.GetMessageForMember(ctx, db.GetMessageForMemberParams{ConversationID: p.ConversationID, Seq: p.Seq, MemberID: me})
	switch {
	case err != nil:
		return fmt.Errorf("get message: %w", err)
	case r.Message.RecalledAt != nil:
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("a recalled message takes no reactions"))
	default:
		return errNotFound // gone from the caller's history since (cleared)
	}
}

// reactionCounts reads the reactions to some messages of a conversation, as
// member me sees them, by seq.
func (s *ChatServer) reactionCounts(ctx context.Context, me, convID int64, seqs []int64) (map[int64][]*v1.ReactionCount, error) {
	rows, err := s.q.ListReactionCounts(ctx, db.ListReactionCountsParams{ConversationID: convID, Seqs: seqs, MemberID: me})
	if err != nil {
		return nil, fmt.Errorf("list reactions: %w", err)
	}
	out := make(map[int64][]*v1.ReactionCount)
	for _, r := range rows {
		out[r.Seq] = append(out[r.Seq], &v1.ReactionCount{Emoji: r.Emoji, Count: r.Count, ReactedByMe: r.ReactedByMe})
	}
	return out, nil
}

// withReactions fills in the reactions of a page of messages; a recalled
// message shows none.
func (s *ChatServer) withReactions(ctx context.Context, me, convID int64, msgs []*v1.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	seqs := make([]int64, len(msgs))
	for i, m := range msgs {
		seqs[i] = m.GetSeq()
	}
	counts, err := s.reactionCounts(ctx, me, convID, seqs)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.GetRecalledAt() == nil {
			m.Reactions = counts[m.GetSeq()]
		}
	}
	return nil
}

// UpdateConversationSettings changes the caller's own mute, pin and archive
// of a conversation, and syncs them to the caller's devices.
func (s *ChatServer) UpdateConversationSettings(ctx context.Context, req *v1.UpdateConversationSettingsRequest) (*v1.UpdateConversationSettingsResponse, error) {
	me := callerFrom(ctx).MemberID
	p := conversationParams{ConversationID: req.GetConversationId()}
	if err := check(p); err != nil {
		return nil, err
	}
	arg := db.UpdateConversationSettingsParams{ConversationID: p.ConversationID, MemberID: me, Pinned: req.Pinned, Archived: req.Archived}
	switch m := req.GetMute().(type) {
	case *v1.UpdateConversationSettingsRequest_MuteUntil:
		if err := m.MuteUntil.CheckValid(); err != nil || !m.MuteUntil.AsTime().After(s.now()) {
			return nil, invalid("mute_until: must be a time in the future")
		}
		until := m.MuteUntil.AsTime()
		arg.SetMute, arg.MutedUntil = true, &until
	case *v1.UpdateConversationSettingsRequest_MuteForever:
		if !m.MuteForever {
			return nil, invalid("mute_forever: must be true when set (unmute with unmute)")
		}
		arg.SetMute, arg.MutedForever = true, true
	case *v1.UpdateConversationSettingsRequest_Unmute:
		if !m.Unmute {
			return nil, invalid("unmute: must be true when set")
		}
		arg.SetMute = true
	}
	r, err := s.q.UpdateConversationSettings(ctx, arg)
	if err != nil {
		return nil, fmt.Errorf("update conversation settings: %w", err)
	}
	out := toConversationSettings(r, s.now())
	s.publish([]int64{me}, conversationSettingsChanged(out))
	return &v1.UpdateConversationSettingsResponse{Settings: out}, nil
}

type clearHistoryParams struct {
	ConversationID int64 `name:"conversation_id" validate:"gt=0"`
	UpToSeq        int64 `name:"up_to_seq" validate:"min=0"`
}

// ClearConversationHistory raises the caller's floor of a conversation:
// the messages up to it disappear for the caller only (ListMessages, unread
// counts, mentions, reactions, forwards, replies), and stay for everyone
// else. The floor syncs to the caller's devices.
func (s *ChatServer) ClearConversationHistory(ctx context.Context, req *v1.ClearConversationHistoryRequest) (*v1.ClearConversationHistoryResponse, error) {
	me := callerFrom(ctx).MemberID
	p := clearHistoryParams{ConversationID: req.GetConversationId(), UpToSeq: req.GetUpToSeq()}
	if err := check(p); err != nil {
		return nil, err
	}
	r, err := s.q.ClearConversationHistory(ctx, db.ClearConversationHistoryParams{ConversationID: p.ConversationID, MemberID: me, UpToSeq: p.UpToSeq})
	if err != nil {
		return nil, fmt.Errorf("clear conversation history: %w", err)
	}
	out := toConversationSettings(conversationSettingsRow(r), s.now())
	s.publish([]int64{me}, conversationSettingsChanged(out))
	return &v1.ClearConversationHistoryResponse{Settings: out}, nil
}
