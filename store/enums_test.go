package store_test

import (
	"testing"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/store"
)

// TestEnumsAreTheAPIs: the numbers stored for enums are the API's, which the
// mappers (server/rows.go) rely on when they convert one to the other.
func TestEnumsAreTheAPIs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		stored int16
		api    int32
	}{
		{"member", store.RoleMember, int32(v1.GroupRole_GROUP_ROLE_MEMBER)},
		{"admin", store.RoleAdmin, int32(v1.GroupRole_GROUP_ROLE_ADMIN)},
		{"owner", store.RoleOwner, int32(v1.GroupRole_GROUP_ROLE_OWNER)},
		{"no role", store.RoleNone, int32(v1.GroupRole_GROUP_ROLE_UNSPECIFIED)},
		{"direct", store.ConversationDirect, int32(v1.ConversationKind_CONVERSATION_KIND_DIRECT)},
		{"group", store.ConversationGroup, int32(v1.ConversationKind_CONVERSATION_KIND_GROUP)},
		{"invite only", store.PolicyInviteOnly, int32(v1.JoinPolicy_JOIN_POLICY_INVITE_ONLY)},
		{"open", store.PolicyOpen, int32(v1.JoinPolicy_JOIN_POLICY_OPEN)},
		{"pending", store.RequestPending, int32(v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_PENDING)},
		{"accepted", store.RequestAccepted, int32(v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_ACCEPTED)},
		{"declined", store.RequestDeclined, int32(v1.FriendRequestStatus_FRIEND_REQUEST_STATUS_DECLINED)},
	} {
		if int32(tc.stored) != tc.api {
			t.Errorf("%s: stored as %d, the API says %d", tc.name, tc.stored, tc.api)
		}
	}
}
