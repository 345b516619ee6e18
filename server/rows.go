package server

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/store"
)

// The mappers from rows (gen/db) to the API's messages, all in one place.
// Stored enum numbers are the API's (store/enums.go), so enums convert as
// they are.

// toMember maps a row to the API; the phone is shown only to the member itself.
func toMember(m db.Member, self bool) *v1.Member {
	out := &v1.Member{
		Id: m.ID, Nickname: m.Nickname, Avatar: m.Avatar, Gender: v1.Gender(m.Gender),
		Memo: m.Memo, CreatedAt: timestamppb.New(m.CreatedAt), Deleted: m.DeletedAt != nil,
	}
	if self {
		out.Phone = m.Phone
	}
	return out
}

func toSession(s db.Session, current bool) *v1.Session {
	return &v1.Session{
		Id: s.ID, DeviceName: s.DeviceName, Current: current,
		CreatedAt: timestamppb.New(s.CreatedAt), LastSeenAt: timestamppb.New(s.LastSeenAt),
		ExpiresAt: timestamppb.New(s.ExpiresAt),
	}
}

// toFriendRequest maps a request and the other side's public profile.
func toFriendRequest(fr db.FriendRequest, other db.Member) *v1.FriendRequest {
	out := &v1.FriendRequest{
		Id: fr.ID, FromMemberId: fr.FromMemberID, ToMemberId: fr.ToMemberID,
		Status: v1.FriendRequestStatus(fr.Status), Note: fr.Note,
		CreatedAt: timestamppb.New(fr.CreatedAt), Other: toMember(other, false),
	}
	if fr.RespondedAt != nil {
		out.RespondedAt = timestamppb.New(*fr.RespondedAt)
	}
	return out
}

// toContact maps the caller's contact row and the contact's public profile.
func toContact(c db.Contact, m db.Member) *v1.Contact {
	return &v1.Contact{
		Member: toMember(m, false), Remark: c.Remark,
		ConversationId: c.ConversationID, CreatedAt: timestamppb.New(c.CreatedAt),
	}
}

// toGroup maps a group row to the API.
func toGroup(g db.Group) *v1.Group {
	return &v1.Group{
		Id: g.ID, Name: g.Name, Avatar: g.Avatar, Notice: g.Notice, OwnerId: g.OwnerID,
		MemberCount: g.MemberCount, ConversationId: g.ConversationID, JoinPolicy: v1.JoinPolicy(g.JoinPolicy),
		CreatedAt: timestamppb.New(g.CreatedAt), MaxMembers: g.MaxMembers,
	}
}

// toGroupMember maps a member's profile (public unless self) and its place in a group.
func toGroupMember(m db.Member, self bool, role int16, joinedAt *timestamppb.Timestamp) *v1.GroupMember {
	return &v1.GroupMember{Member: toMember(m, self), Role: v1.GroupRole(role), JoinedAt: joinedAt}
}

// toMessage maps a stored message; contentType and size come from its
// attachment row, if any, and q is the message it quotes, if it is a reply.
// A recalled message has no content, and quotes nothing.
func toMessage(m db.Message, contentType *string, size *int64, q quoted) *v1.Message {
	out := &v1.Message{
		ConversationId: m.ConversationID, Seq: m.Seq, SenderId: m.SenderID, ClientMsgId: m.ClientMsgID,
		SentAt: timestamppb.New(m.SentAt), Forwarded: m.Forwarded, Mentions: m.Mentions, MentionEveryone: m.MentionEveryone,
	}
	switch {
	case m.RecalledAt != nil:
		out.RecalledAt = timestamppb.New(*m.RecalledAt)
		return out
	case m.Body != nil:
		out.Content = &v1.Message_Text{Text: *m.Body}
	case m.AttachmentID != nil:
		a := &v1.Attachment{Id: *m.AttachmentID}
		if m.AttachmentKind != nil {
			a.Kind = v1.AttachmentKind(*m.AttachmentKind)
		}
		if m.Caption != nil {
			a.Caption = *m.Caption
		}
		if contentType != nil {
			a.ContentType = *contentType
		}
		if size != nil {
			a.Size = *size
		}
		out.Content = &v1.Message_Attachment{Attachment: a}
	}
	if m.EditedAt != nil {
		out.EditedAt = timestamppb.New(*m.EditedAt)
	}
	if m.ReplyToSeq != nil {
		out.ReplyTo = toReplyPreview(*m.ReplyToSeq, q)
	}
	return out
}

// messageRow is a row of the queries that read messages (GetMessageForMember,
// GetMessageByClientMsgID, ListMessagesAfterSeq, ListMessagesBeforeSeq): one
// shape, so each converts to it.
type messageRow = db.GetMessageForMemberRow

// toReadMessage maps a message read with its attachment and quote.
func toReadMessage(r messageRow) *v1.Message {
	return toMessage(r.Message, r.AttachmentContentType, r.AttachmentSize, quoted{
		SenderID: r.QuotedSenderID, Body: r.QuotedBody, AttachmentKind: r.QuotedAttachmentKind,
		Caption: r.QuotedCaption, RecalledAt: r.QuotedRecalledAt,
	})
}

// quoted is the message a reply quotes, as the read queries join it (LEFT
// JOIN messages q): every field nil when there is none.
type quoted struct {
	SenderID       *int64
	Body           *string
	AttachmentKind *int16
	Caption        *string
	RecalledAt     *time.Time
}

// replyPreviewRunes is how much of the quoted text a preview carries.
const replyPreviewRunes = 100

// toReplyPreview maps the quoted message of a reply to its preview.
func toReplyPreview(seq int64, q quoted) *v1.ReplyPreview {
	out := &v1.ReplyPreview{Seq: seq}
	if q.SenderID == nil || q.RecalledAt != nil {
		// Recalled since it was quoted: "message unavailable".
		out.Unavailable = true
		return out
	}
	out.SenderId = *q.SenderID
	switch {
	case q.Body != nil:
		out.Text = truncateRunes(*q.Body, replyPreviewRunes)
	case q.AttachmentKind != nil:
		out.AttachmentKind = v1.AttachmentKind(*q.AttachmentKind)
		out.Text = truncateRunes(deref(q.Caption), replyPreviewRunes)
	}
	return out
}

// truncateRunes cuts s to at most n characters (runes, never inside one).
func truncateRunes(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}

// toCreatedMessage maps what CreateMessage stored; att is its attachment, if
// any, and q the message it quotes, if it is a reply.
func toCreatedMessage(row db.CreateMessageRow, att *db.Attachment, q quoted) *v1.Message {
	m := db.Message{
		ConversationID: row.ConversationID, Seq: row.Seq, SenderID: row.SenderID, ClientMsgID: row.ClientMsgID,
		Body: row.Body, AttachmentID: row.AttachmentID, AttachmentKind: row.AttachmentKind, Caption: row.Caption,
		SentAt: row.SentAt, RecalledAt: row.RecalledAt, ReplyToSeq: row.ReplyToSeq, Forwarded: row.Forwarded,
		EditedAt: row.EditedAt, Mentions: row.Mentions, MentionEveryone: row.MentionEveryone,
	}
	if att != nil {
		return toMessage(m, &att.ContentType, &att.Size, q)
	}
	return toMessage(m, nil, nil, q)
}

// toConversation maps a row of the caller's conversation list; now decides
// whether a mute until a time still holds. Messages at or below the
// caller's cleared floor are not unread.
func toConversation(r db.ListConversationsByMemberRow, now time.Time) *v1.Conversation {
	out := &v1.Conversation{
		Id: r.ID, Kind: v1.ConversationKind(r.Kind), LastSeq: r.LastSeq, ReadSeq: r.ReadSeq,
		UnreadCount: max(r.LastSeq-max(r.ReadSeq, r.ClearedSeq), 0), UpdatedAt: timestamppb.New(r.ActiveAt),
		MentionedMe: r.MentionedMe,
	}
	// Absent while every setting has its default, as for a client that
	// predates them.
	if r.MutedUntil != nil || r.MutedForever || r.PinnedAt != nil || r.Archived || r.ClearedSeq > 0 {
		out.Settings = toConversationSettings(conversationSettingsRow{
			ConversationID: r.ID, MutedUntil: r.MutedUntil, MutedForever: r.MutedForever,
			PinnedAt: r.PinnedAt, Archived: r.Archived, ClearedSeq: r.ClearedSeq,
		}, now)
	}
	switch {
	case r.Kind == store.ConversationDirect && r.PeerID != nil:
		out.With = &v1.Conversation_Peer{Peer: toMember(db.Member{
			ID: *r.PeerID, Nickname: deref(r.PeerNickname), Avatar: deref(r.PeerAvatar),
			Gender: deref(r.PeerGender), Memo: deref(r.PeerMemo), CreatedAt: deref(r.PeerCreatedAt),
		}, false)}
	case r.GroupID != nil:
		out.With = &v1.Conversation_Group{Group: toGroup(db.Group{
			ID: *r.GroupID, Name: deref(r.GroupName), Avatar: deref(r.GroupAvatar), Notice: deref(r.GroupNotice),
			OwnerID: deref(r.GroupOwnerID), MemberCount: deref(r.GroupMemberCount), MaxMembers: deref(r.GroupMaxMembers),
			JoinPolicy: deref(r.GroupJoinPolicy), ConversationID: r.ID, CreatedAt: deref(r.GroupCreatedAt),
		})}
	}
	if r.MsgSeq != nil {
		out.LastMessage = toMessage(db.Message{
			ConversationID: r.ID, Seq: *r.MsgSeq, SenderID: deref(r.MsgSenderID), ClientMsgID: deref(r.MsgClientMsgID),
			Body: r.MsgBody, AttachmentID: r.MsgAttachmentID, AttachmentKind: r.MsgAttachmentKind, Caption: r.MsgCaption,
			SentAt: deref(r.MsgSentAt), RecalledAt: r.MsgRecalledAt, ReplyToSeq: r.MsgReplyToSeq,
			Forwarded: deref(r.MsgForwarded), EditedAt: r.MsgEditedAt, Mentions: r.MsgMentions,
			MentionEveryone: deref(r.MsgMentionEveryone),
		}, r.MsgAttachmentContentType, r.MsgAttachmentSize, quoted{
			SenderID: r.QuotedSenderID, Body: r.QuotedBody, AttachmentKind: r.QuotedAttachmentKind,
			Caption: r.QuotedCaption, RecalledAt: r.QuotedRecalledAt,
		})
	}
	return out
}

// conversationSettingsRow is what the settings queries return
// (UpdateConversationSettings, ClearConversationHistory: one shape).
type conversationSettingsRow = db.UpdateConversationSettingsRow

// toConversationSettings maps a member's settings of a conversation; now
// decides whether a mute until a time still holds.
func toConversationSettings(r conversationSettingsRow, now time.Time) *v1.ConversationSettings {
	out := &v1.ConversationSettings{
		ConversationId: r.ConversationID, MutedForever: r.MutedForever, Archived: r.Archived, ClearedSeq: r.ClearedSeq,
		Muted: r.MutedForever || (r.MutedUntil != nil && r.MutedUntil.After(now)),
	}
	if r.MutedUntil != nil {
		out.MutedUntil = timestamppb.New(*r.MutedUntil)
	}
	if r.PinnedAt != nil {
		out.PinnedAt = timestamppb.New(*r.PinnedAt)
	}
	return out
}

// deref reads a column that a LEFT JOIN made nullable but that is set
// whenever the joined row exists.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
