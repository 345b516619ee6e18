package store

// The numbers stored for enums, one place for all of them. They are the API's
// enum numbers (karlmalone.v1), so rows map to protos by a plain conversion;
// server's enum test holds the two together. The schema's CHECKs and the
// queries' literals (queries/*.sql) use the same numbers. Genders and
// attachment kinds are stored as the API's numbers too and need no names
// here: the handlers validate their range and store them as given.

// Roles in conversation_members.role.
const (
	RoleNone   int16 = 0 // a direct conversation's two members; in a group: not a member
	RoleMember int16 = 1 // GROUP_ROLE_MEMBER
	RoleAdmin  int16 = 2 // GROUP_ROLE_ADMIN
	RoleOwner  int16 = 3 // GROUP_ROLE_OWNER
)

// Conversation kinds in conversations.kind.
const (
	ConversationDirect int16 = 1 // CONVERSATION_KIND_DIRECT: one per pair of members
	ConversationGroup  int16 = 2 // CONVERSATION_KIND_GROUP: one per group
)

// Join policies in groups.join_policy.
const (
	PolicyInviteOnly int16 = 1 // JOIN_POLICY_INVITE_ONLY
	PolicyOpen       int16 = 2 // JOIN_POLICY_OPEN
)

// Friend request statuses in friend_requests.status.
const (
	RequestPending  int16 = 1 // FRIEND_REQUEST_STATUS_PENDING
	RequestAccepted int16 = 2 // FRIEND_REQUEST_STATUS_ACCEPTED
	RequestDeclined int16 = 3 // FRIEND_REQUEST_STATUS_DECLINED
)
