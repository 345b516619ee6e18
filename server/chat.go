package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/push"
	"github.com/karlmalone/karlmalone/store"
)

// ChatServer implements ChatService.
//
// A message gets its seq in the statement that stores it (CreateMessage), and
// is pushed after that statement commits. Authorization: sends are refused
// with permission_denied when the peer or group is one the caller may see
// (a member who is not a contact or is blocked either way; an open group the
// caller is not in) and not_found otherwise; reads, read cursors, recalls and
// typing in a conversation the caller is not a member of are not_found.
type ChatServer struct {
	*base
	sends       *sendPipeline
	sendLimiter *keyedLimiter[int64]
	// typingLimiter lets one typing event per member and conversation
	// through every cfg.TypingInterval.
	typingLimiter *keyedLimiter[memberConversation]
}

type memberConversation struct{ member, conversation int64 }

var _ karlmalonev1connect.ChatServiceHandler = (*ChatServer)(nil)

func newChatServer(b *base) *ChatServer {
	return &ChatServer{
		base: b, sends: newSendPipeline(b.store, b.log), sendLimiter: newKeyedLimiter[int64](b.cfg.SendPerMember),
		typingLimiter: newKeyedLimiter[memberConversation](RateLimit{Every: b.cfg.TypingInterval, Burst: 1}),
	}
}

const (
	defaultMessageLimit = 50
	maxMessageLimit     = 200
)

var (
	errNotContact      = connect.NewError(connect.CodePermissionDenied, errors.New("peer_id: not your contact"))
	errBlocked         = connect.NewError(connect.CodePermissionDenied, errors.New("peer_id: you cannot message this member"))
	errNotGroupMember  = connect.NewError(connect.CodePermissionDenied, errors.New("group_id: you are not a member of this group"))
	errCannotPost      = connect.NewError(connect.CodePermissionDenied, errors.New("conversation_id: you can no longer post in this conversation"))
	errNoAttachment    = connect.NewError(connect.CodeNotFound, errors.New("attachment.id: no attachment of yours has this id"))
	errNoLongerMember  = connect.NewError(connect.CodePermissionDenied, errors.New("you are no longer a member of this conversation"))
	errSendRateLimited = connect.NewError(connect.CodeResourceExhausted, errors.New("sending too fast; slow down and retry"))
	errClientMsgIDUsed = connect.NewError(connect.CodeAlreadyExists, errors.New("client_msg_id: already used for a message in another conversation"))
	errNoReplyTarget   = connect.NewError(connect.CodeNotFound, errors.New("reply_to_seq: no such message in this conversation"))
	errReplyRecalled   = connect.NewError(connect.CodeFailedPrecondition, errors.New("reply_to_seq: that message was recalled"))
	errMentionEveryone = connect.NewError(connect.CodePermissionDenied, errors.New("mention_everyone: only the group's owner and admins may mention everyone"))
	errForwardRecalled = connect.NewError(connect.CodeFailedPrecondition, errors.New("seq: a recalled message cannot be forwarded"))
)

type sendMessageParams struct {
	PeerID         *int64  `name:"peer_id" validate:"omitnil,gt=0"`
	GroupID        *int64  `name:"group_id" validate:"omitnil,gt=0"`
	ClientMsgID    string  `name:"client_msg_id" validate:"text,required,max=64"`
	Text           *string `name:"text" validate:"omitnil,text,min=1,max=4000"`
	AttachmentID   *int64  `name:"attachment.id" validate:"omitnil,gt=0"`
	AttachmentKind *int32  `name:"attachment.kind" validate:"omitnil,min=1,max=3"`
	Caption        *string `name:"attachment.caption" validate:"omitnil,text,max=1024"`
	ReplyToSeq     *int64  `name:"reply_to_seq" validate:"omitnil,gt=0"`
	Mentions       []int64 `name:"mentions" validate:"max=50,unique,dive,gt=0"`
	MentionAll     bool    `name:"mention_everyone"`
}

func (s *ChatServer) SendMessage(ctx context.Context, req *v1.SendMessageRequest) (*v1.SendMessageResponse, error) {
	me := callerFrom(ctx).MemberID
	if !s.sendLimiter.allow(me, s.now()) {
		return nil, errSendRateLimited
	}
	p, err := sendParams(req)
	if err != nil {
		return nil, err
	}
	// The insert itself checks that the caller may post to the target; only
	// when it stores nothing do we ask why (sendTarget), off the hot path.
	arg := db.CreateMessageParams{
		PeerID: p.PeerID, GroupID: p.GroupID, SenderID: me, ClientMsgID: p.ClientMsgID, Body: p.Text, ReplyToSeq: p.ReplyToSeq,
		Mentions: p.Mentions, MentionEveryone: p.MentionAll,
	}
	var q quoted
	if p.ReplyToSeq != nil {
		// A reply costs one more round trip; a plain message none.
		if q, err = s.replyQuote(ctx, me, p); err != nil {
			return nil, err
		}
	}
	var att *db.Attachment
	if p.AttachmentID != nil {
		a, err := s.q.GetAttachmentByID(ctx, *p.AttachmentID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && a.UploaderID != me) {
			return nil, errNoAttachment
		}
		if err != nil {
			return nil, fmt.Errorf("get attachment: %w", err)
		}
		kind := int16(*p.AttachmentKind)
		caption := ""
		if p.Caption != nil {
			caption = *p.Caption
		}
		att, arg.AttachmentID, arg.AttachmentKind, arg.Caption = &a, &a.ID, &kind, &caption
	}
	return s.send(ctx, me, p, arg, att, q)
}

// send stores a message (SendMessage, ForwardMessage) and answers with it,
// or with why it was not stored, or with the message a retry stored before.
func (s *ChatServer) send(ctx context.Context, me int64, p sendMessageParams, arg db.CreateMessageParams, att *db.Attachment, q quoted) (*v1.SendMessageResponse, error) {
	out, err := s.storeAndPublish(ctx, arg, att, q)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrClientMsgIDReused):
		// Nothing stored. Either the caller may not post there (sendTarget
		// says why), or this is a retry: its client_msg_id is taken (no seq
		// was bumped), or a concurrent retry won (a unique violation, rolled
		// back with its bump).
		convID, err := s.sendTarget(ctx, me, p)
		if err != nil {
			return nil, err
		}
		if arg.MentionEveryone {
			// Or the insert refused @everyone from a plain member.
			cm, err := s.q.GetConversationMember(ctx, db.GetConversationMemberParams{ConversationID: convID, MemberID: me})
			if err == nil && cm.Role < store.RoleAdmin {
				return nil, errMentionEveryone
			}
		}
		return s.storedMessage(ctx, me, p.ClientMsgID, convID)
	case err != nil:
		return nil, err
	}
	return &v1.SendMessageResponse{Message: out}, nil
}

// storeAndPublish stores a message through the send pipeline, which pushes
// it to the conversation's members right after the commit, in seq order.
func (s *ChatServer) storeAndPublish(ctx context.Context, arg db.CreateMessageParams, att *db.Attachment, q quoted) (*v1.Message, error) {
	var out *v1.Message
	_, err := s.sends.send(ctx, arg, func(row db.CreateMessageRow) {
		out = toCreatedMessage(row, att, q)
		s.publish(row.RecipientIds, messageSent(out))
		s.notifyOffline(row)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// sendParams validates a SendMessage request.
func sendParams(req *v1.SendMessageRequest) (sendMessageParams, error) {
	p := sendMessageParams{ClientMsgID: req.GetClientMsgId(), Mentions: req.GetMentions(), MentionAll: req.GetMentionEveryone()}
	if r := req.GetReplyToSeq(); r != 0 {
		p.ReplyToSeq = &r
	}
	switch t := req.GetTarget().(type) {
	case *v1.SendMessageRequest_PeerId:
		p.PeerID = &t.PeerId
	case *v1.SendMessageRequest_GroupId:
		p.GroupID = &t.GroupId
	default:
		return p, invalid("target: set peer_id or group_id")
	}
	switch c := req.GetContent().(type) {
	case *v1.SendMessageRequest_Text:
		p.Text = &c.Text
	case *v1.SendMessageRequest_Attachment:
		a := c.Attachment
		if a == nil {
			return p, invalid("attachment: is required")
		}
		id, kind, caption := a.GetId(), int32(a.GetKind()), a.GetCaption()
		p.AttachmentID, p.AttachmentKind, p.Caption = &id, &kind, &caption
	default:
		return p, invalid("content: set text or attachment")
	}
	if err := check(p); err != nil {
		return p, err
	}
	if p.PeerID != nil && (len(p.Mentions) > 0 || p.MentionAll) {
		return p, invalid("mentions: only group messages mention members")
	}
	if len(p.Mentions) == 0 {
		p.Mentions = nil // stored as NULL: no mentions
	}
	if p.Text != nil {
		if err := checkText("text", *p.Text); err != nil {
			return p, err
		}
	}
	return p, nil
}

// checkText refuses a message text that is blank or holds NUL (which
// PostgreSQL text cannot); the length is the tags'.
func checkText(field, text string) error {
	if strings.ContainsRune(text, 0) {
		return invalid("%s: must not contain NUL characters", field)
	}
	if strings.TrimSpace(text) == "" {
		return invalid("%s: must not be blank", field)
	}
	return nil
}

// replyQuote reads the message a reply quotes, in the conversation the reply
// goes to. When there is none, the caller may not post there at all
// (sendTarget says why) or the seq is wrong.
func (s *ChatServer) replyQuote(ctx context.Context, me int64, p sendMessageParams) (quoted, error) {
	r, err := s.q.GetReplyQuote(ctx, db.GetReplyQuoteParams{SenderID: me, Seq: *p.ReplyToSeq, PeerID: p.PeerID, GroupID: p.GroupID})
	if errors.Is(err, store.ErrNotFound) {
		if _, err := s.sendTarget(ctx, me, p); err != nil {
			return quoted{}, err
		}
		return quoted{}, errNoReplyTarget
	}
	if err != nil {
		return quoted{}, fmt.Errorf("get reply quote: %w", err)
	}
	if r.RecalledAt != nil {
		return quoted{}, errReplyRecalled
	}
	return quoted{SenderID: &r.SenderID, Body: r.Body, AttachmentKind: r.AttachmentKind, Caption: r.Caption}, nil
}

// sendTarget resolves the target of a send to a conversation the caller may
// post in, or says why it may not. CreateMessage makes the same decision
// atomically with the insert; this runs only when that stored nothing.
func (s *ChatServer) sendTarget(ctx context.Context, me int64, p sendMessageParams) (int64, error) {
	if p.PeerID != nil {
		t, err := s.q.GetDirectSendTarget(ctx, db.GetDirectSendTargetParams{SenderID: me, PeerID: *p.PeerID})
		if errors.Is(err, store.ErrNotFound) {
			// Members are public (GetMember): an unknown id is not found, a
			// stranger is refused.
			if _, err := s.q.GetMemberByID(ctx, *p.PeerID); err != nil {
				return 0, fmt.Errorf("get peer: %w", err)
			}
			return 0, errNotContact
		}
		if err != nil {
			return 0, fmt.Errorf("get direct conversation: %w", err)
		}
		if t.Blocked {
			return 0, errBlocked
		}
		return t.ConversationID, nil
	}
	t, err := s.q.GetGroupSendTarget(ctx, db.GetGroupSendTargetParams{SenderID: me, GroupID: *p.GroupID})
	if err != nil {
		return 0, fmt.Errorf("get group conversation: %w", err)
	}
	switch {
	case t.IsMember && !t.Dissolved:
		return t.ConversationID, nil
	case t.Dissolved || t.JoinPolicy != store.PolicyOpen:
		// As GroupService shows them: a dissolved group, or an invite-only
		// group the caller is not in, is not found.
		return 0, errNotFound
	default:
		return 0, errNotGroupMember
	}
}

// storedMessage answers a SendMessage that stored nothing: with the message
// already stored under its client_msg_id (a retry, not pushed again), or, if
// there is none, as a sender no longer allowed to post.
func (s *ChatServer) storedMessage(ctx context.Context, me int64, clientMsgID string, convID int64) (*v1.SendMessageResponse, error) {
	r, err := s.q.GetMessageByClientMsgID(ctx, db.GetMessageByClientMsgIDParams{SenderID: me, ClientMsgID: clientMsgID})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNoLongerMember // nothing stored under that key: the insert found no membership
	}
	if err != nil {
		return nil, fmt.Errorf("get message by client_msg_id: %w", err)
	}
	if r.Message.ConversationID != convID {
		return nil, errClientMsgIDUsed
	}
	return &v1.SendMessageResponse{Message: toReadMessage(messageRow(r))}, nil
}

func (s *ChatServer) ListConversations(ctx context.Context, req *v1.ListConversationsRequest) (*v1.ListConversationsResponse, error) {
	me := callerFrom(ctx).MemberID
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := decodePageToken(req.GetPageToken(), 3)
	if err != nil {
		return nil, err
	}
	arg := db.ListConversationsByMemberParams{MemberID: me, MaxRows: size + 1}
	if after != nil {
		at, err := pageTime(after[1], after[2])
		if err != nil {
			return nil, err
		}
		arg.AfterPinRank, arg.AfterActiveAt, arg.AfterID = after[0], at, after[2]
	}
	rows, err := s.q.ListConversationsByMember(ctx, arg)
	if err != nil {
		return nil, fmt.Errorf("list conversations: %w", err)
	}
	// Keyed on the pin and activity time, which move when a message arrives
	// or the caller pins: a conversation that moves ahead while a client pages
	// jumps to the front (the client learns of it by push) and is not
	// repeated behind the cursor.
	rows, next := trimPage(rows, size, func(r db.ListConversationsByMemberRow) []int64 {
		return []int64{r.PinRank, r.ActiveAt.UnixMicro(), r.ID}
	})
	res := &v1.ListConversationsResponse{NextPageToken: next}
	now := s.now()
	for _, r := range rows {
		res.Conversations = append(res.Conversations, toConversation(r, now))
	}
	return res, nil
}

type listMessagesParams struct {
	ConversationID int64  `name:"conversation_id" validate:"gt=0"`
	AfterSeq       *int64 `name:"after_seq" validate:"omitnil,min=0"`
	BeforeSeq      *int64 `name:"before_seq" validate:"omitnil,min=1"`
	Limit          int32  `name:"limit" validate:"min=0"`
}

func (s *ChatServer) ListMessages(ctx context.Context, req *v1.ListMessagesRequest) (*v1.ListMessagesResponse, error) {
	me := callerFrom(ctx).MemberID
	p := listMessagesParams{ConversationID: req.GetConversationId(), Limit: req.GetLimit()}
	switch pos := req.GetPosition().(type) {
	case *v1.ListMessagesRequest_AfterSeq:
		p.AfterSeq = &pos.AfterSeq
	case *v1.ListMessagesRequest_BeforeSeq:
		p.BeforeSeq = &pos.BeforeSeq
	}
	if err := check(p); err != nil {
		return nil, err
	}
	// Like page_size: 0 takes the default, too many is clamped.
	limit := min(p.Limit, maxMessageLimit)
	if limit == 0 {
		limit = defaultMessageLimit
	}
	cm, err := s.q.GetConversationMember(ctx, db.GetConversationMemberParams{ConversationID: p.ConversationID, MemberID: me})
	if err != nil {
		return nil, fmt.Errorf("get conversation member: %w", err)
	}
	res := &v1.ListMessagesResponse{}
	if p.AfterSeq != nil {
		rows, err := s.q.ListMessagesAfterSeq(ctx, db.ListMessagesAfterSeqParams{
			ConversationID: p.ConversationID, AfterSeq: *p.AfterSeq, FloorSeq: cm.ClearedSeq, MaxRows: limit + 1,
		})
		if err != nil {
			return nil, fmt.Errorf("list messages: %w", err)
		}
		res.HasMore = len(rows) > int(limit)
		for _, r := range rows[:min(len(rows), int(limit))] {
			res.Messages = append(res.Messages, toReadMessage(messageRow(r)))
		}
		if err := s.withReactions(ctx, me, p.ConversationID, res.Messages); err != nil {
			return nil, err
		}
		return res, nil
	}
	before := int64(1<<63 - 1) // neither: the newest
	if p.BeforeSeq != nil {
		before = *p.BeforeSeq
	}
	rows, err := s.q.ListMessagesBeforeSeq(ctx, db.ListMessagesBeforeSeqParams{
		ConversationID: p.ConversationID, BeforeSeq: before, FloorSeq: cm.ClearedSeq, MaxRows: limit + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	res.HasMore = len(rows) > int(limit)
	rows = rows[:min(len(rows), int(limit))]
	slices.Reverse(rows)
	for _, r := range rows {
		res.Messages = append(res.Messages, toReadMessage(messageRow(r)))
	}
	if err := s.withReactions(ctx, me, p.ConversationID, res.Messages); err != nil {
		return nil, err
	}
	return res, nil
}

type markReadParams struct {
	ConversationID int64 `name:"conversation_id" validate:"gt=0"`
	Seq            int64 `name:"seq" validate:"min=0"`
}

func (s *ChatServer) MarkRead(ctx context.Context, req *v1.MarkReadRequest) (*v1.MarkReadResponse, error) {
	me := callerFrom(ctx).MemberID
	p := markReadParams{ConversationID: req.GetConversationId(), Seq: req.GetSeq()}
	if err := check(p); err != nil {
		return nil, err
	}
	r, err := s.q.MarkConversationRead(ctx, db.MarkConversationReadParams{ConversationID: p.ConversationID, MemberID: me, Seq: p.Seq})
	if err != nil {
		return nil, fmt.Errorf("mark read: %w", err)
	}
	if p.Seq > r.LastSeq {
		return nil, invalid("seq: must not exceed the conversation's last_seq (%d)", r.LastSeq)
	}
	if r.ReadSeq > r.OldReadSeq {
		// Everyone in the conversation, the caller included: its other
		// devices clear their unread badges.
		if err := s.publishToConversation(ctx, p.ConversationID, 0, readReceipt(p.ConversationID, me, r.ReadSeq)); err != nil {
			return nil, err
		}
	}
	return &v1.MarkReadResponse{ReadSeq: r.ReadSeq}, nil
}

type messageRefParams struct {
	ConversationID int64 `name:"conversation_id" validate:"gt=0"`
	Seq            int64 `name:"seq" validate:"gt=0"`
}

func (s *ChatServer) RecallMessage(ctx context.Context, req *v1.RecallMessageRequest) (*v1.RecallMessageResponse, error) {
	me := callerFrom(ctx).MemberID
	p := messageRefParams{ConversationID: req.GetConversationId(), Seq: req.GetSeq()}
	if err := check(p); err != nil {
		return nil, err
	}
	m, err := s.q.RecallMessage(ctx, db.RecallMessageParams{
		ConversationID: p.ConversationID, Seq: p.Seq, SenderID: me, WindowMicros: s.cfg.RecallWindow.Microseconds(),
	})
	if errors.Is(err, store.ErrNotFound) {
		return s.notRecalled(ctx, me, p)
	}
	if err != nil {
		return nil, fmt.Errorf("recall message: %w", err)
	}
	out := toMessage(m, nil, nil, quoted{})
	if err := s.publishToConversation(ctx, p.ConversationID, 0, messageRecalled(out)); err != nil {
		return nil, err
	}
	return &v1.RecallMessageResponse{Message: out}, nil
}

// notRecalled explains a recall that changed nothing. Recalling a recalled
// message again succeeds (a retry), without a second event.
func (s *ChatServer) notRecalled(ctx context.Context, me int64, p messageRefParams) (*v1.RecallMessageResponse, error) {
	r, err := s.q.GetMessageForMember(ctx, db.GetMessageForMemberParams{ConversationID: p.ConversationID, Seq: p.Seq, MemberID: me})
	switch {
	case err != nil:
		return nil, fmt.Errorf("get message: %w", err)
	case r.Message.SenderID != me:
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("only the sender may recall a message"))
	case r.Message.RecalledAt != nil:
		return &v1.RecallMessageResponse{Message: toMessage(r.Message, nil, nil, quoted{})}, nil
	default:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("the recall window (%s) has passed", s.cfg.RecallWindow))
	}
}

type conversationParams struct {
	ConversationID int64 `name:"conversation_id" validate:"gt=0"`
}

func (s *ChatServer) SendTyping(ctx context.Context, req *v1.SendTypingRequest) (*v1.SendTypingResponse, error) {
	me := callerFrom(ctx).MemberID
	p := conversationParams{ConversationID: req.GetConversationId()}
	if err := check(p); err != nil {
		return nil, err
	}
	// At most one typing event per member and conversation every
	// TypingInterval: a client that calls more often (on every keystroke)
	// is answered with success and nothing is sent, since the event it
	// would send says nothing the last one did not. Without this, one
	// member's 2,000 calls became 600,000 frames in a large group.
	key, now := memberConversation{me, p.ConversationID}, s.now()
	if !s.typingLimiter.allow(key, now) {
		return &v1.SendTypingResponse{}, nil
	}
	a, err := s.q.GetConversationAccess(ctx, db.GetConversationAccessParams{ConversationID: p.ConversationID, MemberID: me})
	if err == nil && !a.CanPost {
		err = errCannotPost
	}
	if err != nil {
		// Refused calls take no turn: an outsider is refused every time,
		// not answered with a silent success on the second try.
		s.typingLimiter.refund(key, now)
		if errors.Is(err, errCannotPost) {
			return nil, err
		}
		return nil, fmt.Errorf("get conversation access: %w", err)
	}
	if err := s.publishToConversation(ctx, p.ConversationID, me, typing(p.ConversationID, me)); err != nil {
		return nil, err
	}
	return &v1.SendTypingResponse{}, nil
}

// publishToConversation pushes ev to the conversation's members, except
// skip (0 skips nobody).
func (s *ChatServer) publishToConversation(ctx context.Context, convID, skip int64, ev *v1.Event) error {
	ids, err := s.q.ListConversationMemberIDs(ctx, convID)
	if err != nil {
		return fmt.Errorf("list conversation members: %w", err)
	}
	s.publish(slices.DeleteFunc(ids, func(id int64) bool { return id == skip }), ev)
	return nil
}

func (s *ChatServer) Subscribe(ctx context.Context, _ *v1.SubscribeRequest, stream *connect.ServerStream[v1.SubscribeResponse]) error {
	c := callerFrom(ctx)
	sub, err := s.hub.Subscribe(ctx, push.Principal{MemberID: c.MemberID, SessionID: c.SessionID, ExpiresAt: c.ExpiresAt})
	if err != nil {
		return subscriptionEnded(err)
	}
	defer sub.Close()
	// Check the session again now that the stream is registered. A
	// revocation deletes the session and then closes its receivers: if it
	// ran since the token was checked it missed this stream, and this check
	// fails; if it runs later, it finds the stream.
	live, err := s.q.SessionIsLive(ctx, c.SessionID)
	if err != nil {
		return fmt.Errorf("check session: %w", err)
	}
	if !live {
		return errBadToken
	}
	// Every write has a deadline: a client that stops reading would
	// otherwise hold this goroutine for good. The last one also covers the
	// end of the stream, so the client learns why it ended.
	rc := responseController(ctx)
	if rc != nil {
		// The request has been read; the body's deadline (transport.go)
		// must not outlive it on a stream that lasts hours.
		rc.SetReadDeadline(time.Time{})
	}
	send := func(res *v1.SubscribeResponse) error {
		if rc != nil {
			rc.SetWriteDeadline(time.Now().Add(s.cfg.SubscribeWriteTimeout))
		}
		return stream.Send(res)
	}
	defer func() {
		if rc != nil {
			rc.SetWriteDeadline(time.Now().Add(s.cfg.SubscribeWriteTimeout))
		}
	}()
	// Send the headers now: a client that sees them knows its events flow.
	if err := send(nil); err != nil {
		return fmt.Errorf("send headers: %w", err)
	}
	for {
		// A stream quiet for SubscribeKeepalive gets a response without an
		// event (docs/PUSH.md): proxies see traffic, and a dead client
		// shows up as a failed write.
		wait, cancel := context.WithTimeout(ctx, s.cfg.SubscribeKeepalive)
		msg, err := sub.Next(wait)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			if err := send(&v1.SubscribeResponse{}); err != nil {
				return fmt.Errorf("send keepalive: %w", err)
			}
			continue
		}
		if err != nil {
			return subscriptionEnded(err)
		}
		ev, ok := msg.(*v1.Event)
		if !ok {
			s.log.ErrorContext(ctx, "subscribe: event of unexpected type", "type", fmt.Sprintf("%T", msg))
			continue
		}
		if err := send(&v1.SubscribeResponse{Event: ev}); err != nil {
			return fmt.Errorf("send event: %w", err)
		}
	}
}

// subscriptionEnded maps why the hub ended a subscription to what the client
// should do. Every end may have dropped queued events: the client resyncs
// with ListMessages when it subscribes again.
func subscriptionEnded(err error) error {
	switch {
	case errors.Is(err, push.ErrSlowConsumer):
		// A limit was hit (the per-device queue), as with rate limits; a
		// distinct code from unavailable tells the client it lost events.
		return connect.NewError(connect.CodeResourceExhausted, errors.New("too slow: events were dropped; subscribe again and resync with ListMessages"))
	case errors.Is(err, push.ErrSessionRevoked):
		return connect.NewError(connect.CodeUnauthenticated, errors.New("session revoked"))
	case errors.Is(err, push.ErrSessionExpired):
		return connect.NewError(connect.CodeUnauthenticated, errors.New("session expired"))
	case errors.Is(err, push.ErrTooManyReceivers):
		return connect.NewError(connect.CodeResourceExhausted, errors.New("too many open push sockets and subscriptions for this member; close one"))
	case errors.Is(err, push.ErrShutdown):
		return connect.NewError(connect.CodeUnavailable, errors.New("server shutting down; subscribe again"))
	case errors.Is(err, push.ErrClosed):
		// The stream's context ended (the client went away).
		return context.Canceled
	}
	return err
}
