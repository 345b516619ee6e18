package server

import (
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// The events the server pushes, one constructor each, so a handler names what
// happened and never builds the envelope. base.publish stamps and sends them
// after the change committed; push.Event's oneof kind lists them all.

func messageSent(m *v1.Message) *v1.Event {
	return &v1.Event{Kind: &v1.Event_Message{Message: m}}
}

func messageRecalled(m *v1.Message) *v1.Event {
	return &v1.Event{Kind: &v1.Event_MessageRecalled{MessageRecalled: &v1.MessageRecalled{
		ConversationId: m.GetConversationId(), Seq: m.GetSeq(), SenderId: m.GetSenderId(), RecalledAt: m.GetRecalledAt(),
	}}}
}

func messageEdited(m *v1.Message) *v1.Event {
	return &v1.Event{Kind: &v1.Event_MessageEdited{MessageEdited: &v1.MessageEdited{
		ConversationId: m.GetConversationId(), Seq: m.GetSeq(), SenderId: m.GetSenderId(), Text: m.GetText(), EditedAt: m.GetEditedAt(),
	}}}
}

func reactionChanged(r *v1.ReactionChanged) *v1.Event {
	return &v1.Event{Kind: &v1.Event_Reaction{Reaction: r}}
}

func conversationSettingsChanged(cs *v1.ConversationSettings) *v1.Event {
	return &v1.Event{Kind: &v1.Event_ConversationSettingsChanged{ConversationSettingsChanged: cs}}
}

func readReceipt(conversationID, memberID, readSeq int64) *v1.Event {
	return &v1.Event{Kind: &v1.Event_ReadReceipt{ReadReceipt: &v1.ReadReceipt{
		ConversationId: conversationID, MemberId: memberID, ReadSeq: readSeq,
	}}}
}

func typing(conversationID, memberID int64) *v1.Event {
	return &v1.Event{Kind: &v1.Event_Typing{Typing: &v1.Typing{ConversationId: conversationID, MemberId: memberID}}}
}

func friendRequestReceived(fr *v1.FriendRequest) *v1.Event {
	return &v1.Event{Kind: &v1.Event_FriendRequestReceived{FriendRequestReceived: fr}}
}

func friendRequestAnswered(fr *v1.FriendRequest) *v1.Event {
	return &v1.Event{Kind: &v1.Event_FriendRequestAnswered{FriendRequestAnswered: fr}}
}

// contactRemoved tells one side that memberID is no longer its contact.
func contactRemoved(memberID int64) *v1.Event {
	return &v1.Event{Kind: &v1.Event_ContactRemoved{ContactRemoved: &v1.ContactRemoved{MemberId: memberID}}}
}

func sessionRevoked(sessionID int64) *v1.Event {
	return &v1.Event{Kind: &v1.Event_SessionRevoked{SessionRevoked: &v1.SessionRevoked{SessionId: sessionID}}}
}

func groupCreated(g *v1.Group) *v1.Event {
	return &v1.Event{Kind: &v1.Event_GroupCreated{GroupCreated: g}}
}

func groupUpdated(g *v1.Group) *v1.Event {
	return &v1.Event{Kind: &v1.Event_GroupUpdated{GroupUpdated: g}}
}

func groupDissolved(groupID int64) *v1.Event {
	return &v1.Event{Kind: &v1.Event_GroupDissolved{GroupDissolved: &v1.GroupDissolved{GroupId: groupID}}}
}

// memberJoined: memberID joined the group by itself (actorID == memberID).
func memberJoined(groupID, memberID, actorID int64) *v1.Event {
	return &v1.Event{Kind: &v1.Event_MemberJoined{MemberJoined: memberChange(groupID, memberID, actorID, v1.GroupRole_GROUP_ROLE_MEMBER)}}
}

// membersAdded: actorID added memberIDs to the group as members, one event
// for all of them (one per member would be O(n²) deliveries).
func membersAdded(groupID int64, memberIDs []int64, actorID int64) *v1.Event {
	return &v1.Event{Kind: &v1.Event_MembersAdded{MembersAdded: &v1.GroupMembersAdded{GroupId: groupID, MemberIds: memberIDs, ActorId: actorID}}}
}

// memberRemoved: actorID removed memberID from the group.
func memberRemoved(groupID, memberID, actorID int64) *v1.Event {
	return &v1.Event{Kind: &v1.Event_MemberRemoved{MemberRemoved: memberChange(groupID, memberID, actorID, v1.GroupRole_GROUP_ROLE_UNSPECIFIED)}}
}

// memberLeft: memberID left the group.
func memberLeft(groupID, memberID int64) *v1.Event {
	return &v1.Event{Kind: &v1.Event_MemberLeft{MemberLeft: memberChange(groupID, memberID, memberID, v1.GroupRole_GROUP_ROLE_UNSPECIFIED)}}
}

// memberRoleChanged: actorID gave memberID the role (a stored role number).
func memberRoleChanged(groupID, memberID, actorID int64, role int16) *v1.Event {
	return &v1.Event{Kind: &v1.Event_MemberRoleChanged{MemberRoleChanged: memberChange(groupID, memberID, actorID, v1.GroupRole(role))}}
}

func memberChange(groupID, memberID, actorID int64, role v1.GroupRole) *v1.GroupMemberChange {
	return &v1.GroupMemberChange{GroupId: groupID, MemberId: memberID, ActorId: actorID, Role: role}
}

// memberDeleted: memberID deleted its account (DeleteAccount).
func memberDeleted(memberID int64) *v1.Event {
	return &v1.Event{Kind: &v1.Event_MemberDeleted{MemberDeleted: &v1.MemberDeleted{MemberId: memberID}}}
}
