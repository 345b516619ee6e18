package server

import (
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
// attachment row, if any. A recalled message has no content.
func toMessage(m db.Message, contentType *string, size *int64) *v1.Message {
	out := &v1.Message{
		ConversationId: m.ConversationID, Seq: m.Seq, SenderId: m.SenderID, ClientMsgId: m.ClientMsgID,
		SentAt: timestamppb.New(m.SentAt),
	}
	switch {
	case m.RecalledAt != nil:
		out.RecalledAt = timestamppb.New(*m.RecalledAt)
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
	return out
}

// toCreatedMessage maps what CreateMessage stored; att is its attachment, if any.
func toCreatedMessage(row db.CreateMessageRow, att *db.Attachment) *v1.Message {
	m := db.Message{
		ConversationID: row.ConversationID, Seq: row.Seq, SenderID: row.SenderID, ClientMsgID: row.ClientMsgID,
		Body: row.Body, AttachmentID: row.AttachmentID, AttachmentKind: row.AttachmentKind, Caption: row.Caption,
		SentAt: row.SentAt, RecalledAt: row.RecalledAt,
	}
	if att != nil {
		return toMessage(m, &att.ContentType, &att.Size)
	}
	return toMessage(m, nil, nil)
}

func toConversation(r db.ListConversationsByMemberRow) *v1.Conversation {
	out := &v1.Conversation{
		Id: r.ID, Kind: v1.ConversationKind(r.Kind), LastSeq: r.LastSeq, ReadSeq: r.ReadSeq,
		UnreadCount: max(r.LastSeq-r.ReadSeq, 0), UpdatedAt: timestamppb.New(r.ActiveAt),
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
			SentAt: deref(r.MsgSentAt), RecalledAt: r.MsgRecalledAt,
		}, r.MsgAttachmentContentType, r.MsgAttachmentSize)
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
