package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/internal/password"
	"github.com/karlmalone/karlmalone/store"
)

// MemberServer implements MemberService.
type MemberServer struct {
	*base
	hasher          *password.Hasher
	registerPerAddr *keyedLimiter[string]
	// Failed logins, per client address and per (phone, address).
	loginPerAddr      *keyedLimiter[string]
	loginPerPhoneAddr *keyedLimiter[phoneAddr]
	// Per member: password changes (each a hash), and lookups of one
	// member by phone or id (against scraping the directory).
	passwordChanges *keyedLimiter[int64]
	phoneLookups    *keyedLimiter[int64]
	memberLookups   *keyedLimiter[int64]
}

type phoneAddr struct{ phone, addr string }

var _ karlmalonev1connect.MemberServiceHandler = (*MemberServer)(nil)

func newMemberServer(b *base, h *password.Hasher) *MemberServer {
	return &MemberServer{
		base:              b,
		hasher:            h,
		registerPerAddr:   newKeyedLimiter[string](b.cfg.RegisterPerAddr),
		loginPerAddr:      newKeyedLimiter[string](b.cfg.LoginPerAddr),
		loginPerPhoneAddr: newKeyedLimiter[phoneAddr](b.cfg.LoginPerPhoneAddr),
		passwordChanges:   newKeyedLimiter[int64](b.cfg.PasswordChangePerMember),
		phoneLookups:      newKeyedLimiter[int64](b.cfg.PhoneLookupPerMember),
		memberLookups:     newKeyedLimiter[int64](b.cfg.MemberLookupPerMember),
	}
}

// errBadCredentials is the one answer for an unknown phone and a wrong
// password, so Login cannot be used to find out who is registered.
var errBadCredentials = connect.NewError(connect.CodeUnauthenticated, errors.New("wrong phone or password"))

var errRateLimited = connect.NewError(connect.CodeResourceExhausted, errors.New("too many attempts; wait a little and retry"))

var errLookupRateLimited = connect.NewError(connect.CodeResourceExhausted, errors.New("too many member lookups; wait a little and retry"))

// profileParams are the validated profile fields shared by Register and UpdateProfile.
type profileParams struct {
	Nickname *string `name:"nickname" validate:"omitnil,text,min=1,max=32"`
	Avatar   *string `name:"avatar" validate:"omitnil,omitempty,text,max=512,http_url"`
	Gender   *int32  `name:"gender" validate:"omitnil,min=0,max=3"`
	Memo     *string `name:"memo" validate:"omitnil,text,max=256"`
}

type registerParams struct {
	Phone    string `name:"phone" validate:"text,required,startswith=+,e164"`
	Password string `name:"password" validate:"text,min=8,max=128"`
	Nickname string `name:"nickname" validate:"text,required,max=32"`
	Avatar   string `name:"avatar" validate:"omitempty,text,max=512,http_url"`
	Gender   int32  `name:"gender" validate:"min=0,max=3"`
	Memo     string `name:"memo" validate:"text,max=256"`
}

func (s *MemberServer) Register(ctx context.Context, req *v1.RegisterRequest) (*v1.RegisterResponse, error) {
	if !s.registerPerAddr.allow(s.clientKey(ctx), s.now()) {
		return nil, errRateLimited
	}
	p := registerParams{
		Phone: req.GetPhone(), Password: req.GetPassword(), Nickname: strings.TrimSpace(req.GetNickname()),
		Avatar: req.GetAvatar(), Gender: int32(req.GetGender()), Memo: req.GetMemo(),
	}
	if err := check(p); err != nil {
		return nil, err
	}
	hash, err := s.hasher.Hash(ctx, p.Password)
	if err != nil {
		return nil, err
	}
	m, err := s.q.CreateMember(ctx, db.CreateMemberParams{
		Phone: p.Phone, PasswordHash: hash, Nickname: p.Nickname,
		Avatar: p.Avatar, Gender: int16(p.Gender), Memo: p.Memo,
	})
	if errors.Is(err, store.ErrPhoneTaken) {
		return nil, connect.NewError(connect.CodeAlreadyExists, errors.New("phone: already registered"))
	}
	if err != nil {
		return nil, err
	}
	noteMember(ctx, m.ID)
	s.log.InfoContext(ctx, "member registered", "member_id", m.ID)
	return &v1.RegisterResponse{Member: toMember(m, true)}, nil
}

type loginParams struct {
	Phone      string `name:"phone" validate:"text,required,startswith=+,e164"`
	Password   string `name:"password" validate:"text,required,max=128"`
	DeviceName string `name:"device_name" validate:"text,max=64"`
}

func (s *MemberServer) Login(ctx context.Context, req *v1.LoginRequest) (*v1.LoginResponse, error) {
	p := loginParams{Phone: req.GetPhone(), Password: req.GetPassword(), DeviceName: strings.TrimSpace(req.GetDeviceName())}
	if err := check(p); err != nil {
		return nil, err
	}
	// Each attempt takes a token from both buckets before the hash (so a
	// burst of concurrent guesses cannot all pass), and a success gives them
	// back: only failures count. The owner, from any other address, still
	// gets in while someone guesses at their phone.
	now := s.now()
	addr := s.clientKey(ctx)
	pa := phoneAddr{p.Phone, addr}
	if !s.loginPerAddr.allow(addr, now) {
		return nil, errRateLimited
	}
	if !s.loginPerPhoneAddr.allow(pa, now) {
		return nil, errRateLimited
	}
	succeeded := false
	defer func() {
		if succeeded {
			s.loginPerAddr.refund(addr, now)
			s.loginPerPhoneAddr.refund(pa, now)
		}
	}()
	m, err := s.q.GetMemberByPhone(ctx, p.Phone)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	// An unknown phone is verified against a dummy hash: same time, same answer.
	ok, err := s.hasher.Verify(ctx, p.Password, m.PasswordHash)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errBadCredentials
	}
	succeeded = true
	s.rehash(ctx, m, p.Password)
	token, hash := newToken()
	sess, err := s.q.CreateSession(ctx, db.CreateSessionParams{
		MemberID: m.ID, TokenHash: hash, DeviceName: p.DeviceName, ExpiresAt: now.Add(s.cfg.TokenTTL),
	})
	if err != nil {
		return nil, err
	}
	noteMember(ctx, m.ID)
	s.log.InfoContext(ctx, "member logged in", "member_id", m.ID, "session_id", sess.ID)
	return &v1.LoginResponse{
		AccessToken: token,
		ExpiresAt:   timestamppb.New(sess.ExpiresAt),
		Member:      toMember(m, true),
		SessionId:   sess.ID,
	}, nil
}

// rehash upgrades m's password hash to the hasher's parameters when they
// have risen since it was made: the only moment the server holds the
// password. A failure is logged and the login goes on; the next one retries.
func (s *MemberServer) rehash(ctx context.Context, m db.Member, password string) {
	if !s.hasher.NeedsRehash(m.PasswordHash) {
		return
	}
	hash, err := s.hasher.Hash(ctx, password)
	if err == nil {
		_, err = s.q.RehashMemberPassword(ctx, db.RehashMemberPasswordParams{ID: m.ID, NewHash: hash, OldHash: m.PasswordHash})
	}
	if err != nil {
		s.log.WarnContext(ctx, "rehash password", "member_id", m.ID, "err", err)
		return
	}
	s.log.InfoContext(ctx, "password rehashed with current parameters", "member_id", m.ID)
}

func (s *MemberServer) Logout(ctx context.Context, _ *v1.LogoutRequest) (*v1.LogoutResponse, error) {
	c := callerFrom(ctx)
	if err := s.revoke(ctx, c, c.SessionID); err != nil {
		return nil, err
	}
	return &v1.LogoutResponse{}, nil
}

func (s *MemberServer) GetMe(ctx context.Context, _ *v1.GetMeRequest) (*v1.GetMeResponse, error) {
	m, err := s.q.GetMemberByID(ctx, callerFrom(ctx).MemberID)
	if err != nil {
		return nil, err
	}
	return &v1.GetMeResponse{Member: toMember(m, true)}, nil
}

func (s *MemberServer) UpdateProfile(ctx context.Context, req *v1.UpdateProfileRequest) (*v1.UpdateProfileResponse, error) {
	var gender *int32
	if req.Gender != nil {
		g := int32(req.GetGender())
		gender = &g
	}
	nickname := req.Nickname
	if nickname != nil {
		trimmed := strings.TrimSpace(*nickname)
		nickname = &trimmed
	}
	p := profileParams{Nickname: nickname, Avatar: req.Avatar, Gender: gender, Memo: req.Memo}
	if err := check(p); err != nil {
		return nil, err
	}
	var g16 *int16
	if gender != nil {
		g := int16(*gender)
		g16 = &g
	}
	m, err := s.q.UpdateMemberProfile(ctx, db.UpdateMemberProfileParams{
		ID: callerFrom(ctx).MemberID, Nickname: p.Nickname, Avatar: p.Avatar, Gender: g16, Memo: p.Memo,
	})
	if err != nil {
		return nil, err
	}
	return &v1.UpdateProfileResponse{Member: toMember(m, true)}, nil
}

type changePasswordParams struct {
	OldPassword string `name:"old_password" validate:"text,required,max=128"`
	NewPassword string `name:"new_password" validate:"text,min=8,max=128,nefield=OldPassword"`
}

func (s *MemberServer) ChangePassword(ctx context.Context, req *v1.ChangePasswordRequest) (*v1.ChangePasswordResponse, error) {
	p := changePasswordParams{OldPassword: req.GetOldPassword(), NewPassword: req.GetNewPassword()}
	if err := check(p); err != nil {
		return nil, err
	}
	c := callerFrom(ctx)
	if !s.passwordChanges.allow(c.MemberID, s.now()) {
		return nil, errRateLimited
	}
	if err := s.checkPassword(ctx, c.MemberID, p.OldPassword, "old_password"); err != nil {
		return nil, err
	}
	hash, err := s.hasher.Hash(ctx, p.NewPassword)
	if err != nil {
		return nil, err
	}
	var revoked []int64
	err = s.store.InTx(ctx, func(q *db.Queries) error {
		if err := q.UpdateMemberPassword(ctx, db.UpdateMemberPasswordParams{ID: c.MemberID, PasswordHash: hash}); err != nil {
			return err
		}
		revoked, err = q.DeleteOtherSessions(ctx, db.DeleteOtherSessionsParams{MemberID: c.MemberID, KeepID: c.SessionID})
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, id := range revoked {
		s.sessionRevoked(c.MemberID, id)
	}
	s.log.InfoContext(ctx, "password changed", "member_id", c.MemberID, "sessions_revoked", len(revoked))
	return &v1.ChangePasswordResponse{}, nil
}

// checkPassword asks a signed-in member for its password again, before a
// change that needs more than a token; field names the request's field in
// the error.
func (s *MemberServer) checkPassword(ctx context.Context, memberID int64, pw, field string) error {
	m, err := s.q.GetMemberByID(ctx, memberID)
	if err != nil {
		return err
	}
	ok, err := s.hasher.Verify(ctx, pw, m.PasswordHash)
	if err != nil {
		return err
	}
	if !ok {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s: is wrong", field))
	}
	return nil
}

func (s *MemberServer) GetMember(ctx context.Context, req *v1.GetMemberRequest) (*v1.GetMemberResponse, error) {
	if req.GetMemberId() <= 0 {
		return nil, invalid("member_id: must be a member id")
	}
	if !s.memberLookups.allow(callerFrom(ctx).MemberID, s.now()) {
		return nil, errLookupRateLimited
	}
	m, err := s.q.GetMemberByID(ctx, req.GetMemberId())
	if err != nil {
		return nil, err
	}
	return &v1.GetMemberResponse{Member: toMember(m, m.ID == callerFrom(ctx).MemberID)}, nil
}

type searchParams struct {
	Query string `name:"query" validate:"text,required,max=32"`
}

func (s *MemberServer) SearchMembers(ctx context.Context, req *v1.SearchMembersRequest) (*v1.SearchMembersResponse, error) {
	p := searchParams{Query: strings.TrimSpace(req.GetQuery())}
	if err := check(p); err != nil {
		return nil, err
	}
	pg, err := parseIDPage(req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	me := callerFrom(ctx).MemberID
	if strings.HasPrefix(p.Query, "+") {
		if !s.phoneLookups.allow(me, s.now()) {
			return nil, errLookupRateLimited
		}
		// A phone finds exactly one member, on one page.
		m, err := s.q.GetMemberByPhone(ctx, p.Query)
		if errors.Is(err, store.ErrNotFound) || pg.after != 0 {
			return &v1.SearchMembersResponse{}, nil
		}
		if err != nil {
			return nil, err
		}
		return &v1.SearchMembersResponse{Members: []*v1.Member{toMember(m, m.ID == me)}}, nil
	}
	rows, err := s.q.SearchMembersByNicknamePrefix(ctx, db.SearchMembersByNicknamePrefixParams{
		Pattern: store.LikePrefix(strings.ToLower(p.Query)), AfterID: pg.after, MaxRows: pg.limit(),
	})
	if err != nil {
		return nil, err
	}
	members, next := pageOf(pg, rows, func(m db.Member) int64 { return m.ID },
		func(m db.Member) *v1.Member { return toMember(m, m.ID == me) })
	return &v1.SearchMembersResponse{Members: members, NextPageToken: next}, nil
}

func (s *MemberServer) ListSessions(ctx context.Context, _ *v1.ListSessionsRequest) (*v1.ListSessionsResponse, error) {
	c := callerFrom(ctx)
	rows, err := s.q.ListSessionsByMember(ctx, c.MemberID)
	if err != nil {
		return nil, err
	}
	res := &v1.ListSessionsResponse{}
	for _, r := range rows {
		res.Sessions = append(res.Sessions, toSession(r, r.ID == c.SessionID))
	}
	return res, nil
}

func (s *MemberServer) RevokeSession(ctx context.Context, req *v1.RevokeSessionRequest) (*v1.RevokeSessionResponse, error) {
	if req.GetSessionId() <= 0 {
		return nil, invalid("session_id: must be a session id")
	}
	if err := s.revoke(ctx, callerFrom(ctx), req.GetSessionId()); err != nil {
		return nil, err
	}
	return &v1.RevokeSessionResponse{}, nil
}

// revoke deletes one of the caller's sessions; its token fails from the next
// call on, and its open sockets and streams are closed.
func (s *MemberServer) revoke(ctx context.Context, c Caller, sessionID int64) error {
	// Someone else's session looks the same as none: not found.
	if err := deletedOne(s.q.DeleteSession(ctx, db.DeleteSessionParams{ID: sessionID, MemberID: c.MemberID})); err != nil {
		return err
	}
	s.sessionRevoked(c.MemberID, sessionID)
	return nil
}

func (s *MemberServer) sessionRevoked(memberID, sessionID int64) {
	s.publish([]int64{memberID}, sessionRevoked(sessionID))
	s.hub.CloseSession(sessionID)
}
