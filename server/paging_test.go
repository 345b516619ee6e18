package server_test

import (
	"fmt"
	"slices"
	"testing"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// TestPaging10k pages through the two lists that grow to thousands, one
// member's 10,000 contacts and a group of 10,001, and finds everyone once, in
// order. Both use one owner's seeded contacts: seeding is the costly part.
func TestPaging10k(t *testing.T) {
	t.Parallel()
	const bulk = 10000
	e := newEnv(t, withConfig(func(c *server.Config) { c.GroupMaxMembers, c.GroupMaxInvitees = bulk+1, bulk }))
	ctx := t.Context()
	owner := e.register(t, "popular")
	seeded := e.seedContacts(t, owner, "bulk ", bulk)
	ids := make([]int64, len(seeded))
	for i, s := range seeded {
		ids[i] = s.ID
	}

	t.Run("ListContacts", func(t *testing.T) {
		ps := pages(t, func(token string) (*v1.ListContactsResponse, error) {
			return owner.Contacts.ListContacts(ctx, &v1.ListContactsRequest{PageSize: 100, PageToken: token})
		})
		if len(ps) != bulk/100 {
			t.Fatalf("%d pages, want %d", len(ps), bulk/100)
		}
		// Field by field: cmp.Diff over 10,000 messages costs seconds under -race.
		var got []int64
		for i, p := range ps {
			if len(p.GetContacts()) != 100 {
				t.Fatalf("page %d has %d contacts, want 100", i+1, len(p.GetContacts()))
			}
			for _, c := range p.GetContacts() {
				n := len(got)
				if c.GetMember().GetNickname() != fmt.Sprint("bulk ", n) || c.GetRemark() != "" ||
					c.GetConversationId() == 0 || c.GetCreatedAt() == nil || c.GetMember().GetPhone() != "" {
					t.Fatalf("contact %d: %v, want bulk %d's, without a phone", n, c, n)
				}
				got = append(got, c.GetMember().GetId())
			}
		}
		if !slices.Equal(got, ids) {
			t.Fatalf("paged %d ids, want the %d seeded in order (duplicates or gaps)", len(got), len(ids))
		}
	})

	t.Run("ListGroupMembers", func(t *testing.T) {
		// In one CreateGroup: AddGroupMembers would publish an event per added
		// member to every member, millions of deliveries for nobody online.
		// The one advisory lock it takes per invitee fits the test cluster's
		// lock table (64 per connection, 200 connections).
		res, err := owner.Groups.CreateGroup(ctx, &v1.CreateGroupRequest{Name: "crowd", MemberIds: ids})
		if err != nil {
			t.Fatal(err)
		}
		g := res.GetGroup()
		// 1000 is capped to the largest page, 100.
		ps := pages(t, func(token string) (*v1.ListGroupMembersResponse, error) {
			return owner.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: g.GetId(), PageSize: 1000, PageToken: token})
		})
		seen := make(map[int64]bool, bulk+1)
		var last int64
		for i, page := range ps {
			if len(page.GetMembers()) == 0 {
				t.Fatalf("page %d is empty", i+1)
			}
			for _, m := range page.GetMembers() {
				id := m.GetMember().GetId()
				if seen[id] || id <= last {
					t.Fatalf("member %d repeated or out of order after %d", id, last)
				}
				seen[id], last = true, id
				if id != owner.ID && m.GetMember().GetPhone() != "" {
					t.Fatalf("member %d's phone shown to another member", id)
				}
			}
		}
		if len(seen) != bulk+1 || len(ps) != (bulk+1+99)/100 {
			t.Fatalf("listed %d members in %d pages; want %d in %d", len(seen), len(ps), bulk+1, (bulk+1+99)/100)
		}
		// The default page is 20.
		first, err := owner.Groups.ListGroupMembers(ctx, &v1.ListGroupMembersRequest{GroupId: g.GetId()})
		if err != nil || len(first.GetMembers()) != 20 || first.GetNextPageToken() == "" {
			t.Fatalf("default page: %d members, %v", len(first.GetMembers()), err)
		}
	})
}
