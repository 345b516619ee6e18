package server_test

import (
	"testing"
	"time"

	"github.com/coder/websocket"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// withPresenceDebounce shortens the presence debounce window.
func withPresenceDebounce(d time.Duration) envOption {
	return withConfig(func(c *server.Config) { c.PresenceDebounce = d })
}

// nextPresence skips to the next presence event.
func (ev *events) nextPresence() *v1.Presence {
	ev.t.Helper()
	return ev.nextWhere(func(e *v1.Event) bool { return e.GetPresence() != nil }).GetPresence()
}

// presenceOf is what c reads of ids through GetMemberPresence.
func presenceOf(t testing.TB, c *client, ids ...int64) []*v1.Presence {
	t.Helper()
	res, err := c.Members.GetMemberPresence(t.Context(), &v1.GetMemberPresenceRequest{MemberIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	return res.GetPresences()
}

// Presence across three nodes: a member's contact (on another node) and a
// fellow group member (on a third) hear it come online and go offline, can
// read it on any node, with its last-seen time once offline; a stranger
// reads nothing; and when the node hosting the member dies without a word,
// the contact hears it go offline within 15 s (here the bus's timers are
// shrunk, so within about half a second).
func TestClusterPresenceEvents(t *testing.T) {
	t.Parallel()
	cl := newCluster(t, 3, withPresenceDebounce(20*time.Millisecond))
	a, b, c := cl.nodes[0], cl.nodes[1], cl.nodes[2]
	ann, bob, carol, eve := a.register(t, "ann"), a.register(t, "bob"), a.register(t, "carol"), a.register(t, "eve")
	makeContacts(t, ann, bob)
	newGroup(t, ann, carol)
	bobOnB := b.connect(t, b.as(bob))
	carolOnC := c.connect(t, c.as(carol))

	annOnA := a.connect(t, ann)
	for name, ev := range map[string]*events{"bob": bobOnB, "carol": carolOnC} {
		wantProto(t, name+" hears ann online", &v1.Presence{MemberId: ann.ID, Online: true}, ev.nextPresence())
	}
	wantProto(t, "bob reads ann and himself through c, not eve",
		[]*v1.Presence{{MemberId: ann.ID, Online: true}, {MemberId: bob.ID, Online: true}},
		presenceOf(t, c.as(bob), eve.ID, ann.ID, bob.ID))
	if got := presenceOf(t, b.as(eve), ann.ID, bob.ID); len(got) != 0 {
		t.Errorf("eve, neither contact nor fellow group member, read %v", got)
	}

	annOnA.ws.Close(websocket.StatusNormalClosure, "bye")
	off := bobOnB.nextPresence()
	if off.GetMemberId() != ann.ID || off.GetOnline() || off.GetLastSeenAt() == nil {
		t.Errorf("bob heard %v, want ann offline with a last-seen time", off)
	}
	if got := presenceOf(t, b.as(bob), ann.ID); len(got) != 1 || got[0].GetOnline() || got[0].GetLastSeenAt() == nil {
		t.Errorf("bob read %v, want ann offline with a last-seen time", got)
	}
	carolOnC.nextPresence()

	c.connect(t, c.as(ann))
	wantProto(t, "bob hears ann online on c", &v1.Presence{MemberId: ann.ID, Online: true}, bobOnB.nextPresence())
	killed := time.Now()
	c.proxy.Cut() // c dies, as far as a and b can tell
	off = bobOnB.nextPresence()
	if off.GetMemberId() != ann.ID || off.GetOnline() {
		t.Errorf("bob heard %v, want ann offline", off)
	}
	if took := time.Since(killed); took > 15*time.Second {
		t.Errorf("ann went offline %v after her node died, want within 15 s", took)
	}
}

// A member who hides its presence is left out of GetMemberPresence and its
// contacts hear nothing of it; its own profile says so.
func TestPresenceHidden(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withPresenceDebounce(20*time.Millisecond))
	ann, bob, dave := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "dave")
	makeContacts(t, ann, bob)
	makeContacts(t, dave, bob)
	hide := true
	res, err := ann.Members.UpdateProfile(t.Context(), &v1.UpdateProfileRequest{HidePresence: &hide})
	if err != nil {
		t.Fatal(err)
	}
	if !res.GetMember().GetHidePresence() {
		t.Errorf("UpdateProfile answered %v, want hide_presence", res.GetMember())
	}
	me, err := ann.Members.GetMe(t.Context(), &v1.GetMeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !me.GetMember().GetHidePresence() {
		t.Errorf("GetMe answered %v, want hide_presence", me.GetMember())
	}
	got, err := bob.Members.GetMember(t.Context(), &v1.GetMemberRequest{MemberId: ann.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetMember().GetHidePresence() {
		t.Errorf("bob reads ann's setting: %v", got.GetMember())
	}

	bobWS := e.connect(t, bob)
	e.connect(t, ann)
	wantProto(t, "bob reads dave (offline, never seen) and not ann (hidden)",
		[]*v1.Presence{{MemberId: dave.ID}}, presenceOf(t, bob, ann.ID, dave.ID))
	e.connect(t, dave) // after ann: an event of ann's would come first
	wantProto(t, "bob's next presence event", &v1.Presence{MemberId: dave.ID, Online: true}, bobWS.nextPresence())
	if got := presenceOf(t, ann, ann.ID); len(got) != 1 || !got[0].GetOnline() {
		t.Errorf("ann reads herself as %v, want online", got)
	}
}

// A connection that drops and comes back within the debounce window is not
// reported: the contact hears neither offline nor online.
func TestPresenceDebounceMergesAFlap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withPresenceDebounce(time.Second))
	ann, bob, dave := e.register(t, "ann"), e.register(t, "bob"), e.register(t, "dave")
	makeContacts(t, ann, bob)
	makeContacts(t, dave, bob)
	bobWS := e.connect(t, bob)
	annWS := e.connect(t, ann)
	wantProto(t, "bob hears ann online", &v1.Presence{MemberId: ann.ID, Online: true}, bobWS.nextPresence())

	annWS.ws.Close(websocket.StatusNormalClosure, "network change")
	waitFor(t, "the server sees ann gone", func() bool { return !e.Hub.Directory().Presence(ann.ID)[0].Online })
	e.connect(t, ann)
	e.connect(t, dave) // its window ends after ann's: ann's flap would come first
	wantProto(t, "bob's next presence event", &v1.Presence{MemberId: dave.ID, Online: true}, bobWS.nextPresence())
}

// GetMemberPresence takes 1 to 200 member ids.
func TestPresenceRequestBounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann := e.register(t, "ann")
	_, err := ann.Members.GetMemberPresence(t.Context(), &v1.GetMemberPresenceRequest{})
	wantInvalid(t, err, "member_ids")
	_, err = ann.Members.GetMemberPresence(t.Context(), &v1.GetMemberPresenceRequest{MemberIds: make([]int64, 201)})
	wantInvalid(t, err, "member_ids")
}
