package server

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

type searchMessagesParams struct {
	Query          string `name:"query" validate:"text,required,max=256"`
	ConversationID int64  `name:"conversation_id" validate:"min=0"`
}

// searchEnd is the key above every message: the first page starts there.
var searchEnd = []int64{time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro(), math.MaxInt64, math.MaxInt64}

// SearchMessages runs PostgreSQL full-text search (queries/search.sql) over
// the conversations the caller is a member of. A conversation the caller is
// not in finds nothing, the same as one that does not exist: searching
// cannot tell the two apart, as ListMessages cannot.
func (s *ChatServer) SearchMessages(ctx context.Context, req *v1.SearchMessagesRequest) (*v1.SearchMessagesResponse, error) {
	me := callerFrom(ctx).MemberID
	p := searchMessagesParams{Query: strings.TrimSpace(req.GetQuery()), ConversationID: req.GetConversationId()}
	if err := check(p); err != nil {
		return nil, err
	}
	if strings.ContainsRune(p.Query, 0) {
		return nil, invalid("query: must not contain NUL characters")
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	key, err := decodePageToken(req.GetPageToken(), 3)
	if err != nil {
		return nil, err
	}
	if key == nil {
		key = searchEnd
	}
	// Planned for its words every time (store.CustomPlans).
	rows, err := s.store.CustomPlans().SearchMessages(ctx, db.SearchMessagesParams{
		MemberID: me, ConversationID: p.ConversationID, Query: p.Query, MaxRows: size + 1,
		BeforeSentAt: time.UnixMicro(key[0]), BeforeConversationID: key[1], BeforeSeq: key[2],
	})
	if err != nil {
		return nil, fmt.Errorf("search messages: %w", err)
	}
	rows, next := trimPage(rows, size, func(r db.SearchMessagesRow) []int64 {
		return []int64{r.Message.SentAt.UnixMicro(), r.Message.ConversationID, r.Message.Seq}
	})
	res := &v1.SearchMessagesResponse{NextPageToken: next}
	for _, r := range rows {
		res.Messages = append(res.Messages, toReadMessage(messageRow(r)))
	}
	return res, nil
}
