// Command searchbench measures ChatService.SearchMessages' query on a large
// history: it bulk-loads messages with COPY into the database at DATABASE_URL
// (once: a database that already holds them is reused), then times the
// server's own search queries (gen/db, queries/search.sql) for a common and a
// rare word, across all of a member's conversations and in one, and prints
// p50 and p99. Run it on a private cluster (docs/BENCHMARKS.md):
//
//	bin/devpg -dir .data/searchbench -db searchbench -- bin/searchbench -messages 1000000
//
// The data: -conversations group conversations of 20 members each, messages
// spread evenly over them in time order, 10 words each drawn from a Zipf
// distribution over a vocabulary of 5,000 words (so "w0" is in about half the
// messages), and the word "zebra" in one message in 10,007. The searching
// member belongs to -member-conversations of the conversations.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/karlmalone/karlmalone/gen/db"
	"github.com/karlmalone/karlmalone/schema"
	"github.com/karlmalone/karlmalone/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "searchbench:", err)
		os.Exit(1)
	}
}

type config struct {
	messages, conversations, memberConversations, runs int
}

func run() error {
	var c config
	flag.IntVar(&c.messages, "messages", 1_000_000, "messages to store")
	flag.IntVar(&c.conversations, "conversations", 1000, "conversations they are spread over")
	flag.IntVar(&c.memberConversations, "member-conversations", 50, "conversations the searching member belongs to")
	flag.IntVar(&c.runs, "runs", 200, "timed searches per case")
	flag.Parse()
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		return errors.New("DATABASE_URL is not set (run under bin/devpg)")
	}
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := schema.Migrate(ctx, pool, slog.Default()); err != nil {
		return err
	}
	var have int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM messages").Scan(&have); err != nil {
		return err
	}
	if have == 0 {
		if err := load(ctx, pool, c); err != nil {
			return fmt.Errorf("load: %w", err)
		}
	} else {
		fmt.Printf("reusing the %d messages already stored\n", have)
	}
	return bench(ctx, pool, c)
}

// load stores the members, conversations and messages. The search index is
// dropped for the COPY and built again after it, as a restore would.
func load(ctx context.Context, pool *pgxpool.Pool, c config) error {
	start := time.Now()
	const members = 10_000
	if _, err := pool.Exec(ctx, `
		INSERT INTO members (phone, password_hash, nickname)
		SELECT '+1999' || lpad(i::text, 7, '0'), 'x', 'm' || i FROM generate_series(1, $1) i`, members); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO conversations (kind, last_seq) SELECT 2, 0 FROM generate_series(1, $1)`, c.conversations); err != nil {
		return err
	}
	// The searcher (the first member) is in the first member-conversations
	// conversations; each conversation has 20 members in all.
	if _, err := pool.Exec(ctx, `
		INSERT INTO conversation_members (conversation_id, member_id, role)
		SELECT cv.id, m.id, 1
		FROM conversations cv
		CROSS JOIN LATERAL (
			SELECT (SELECT min(id) FROM members) + ((cv.id * 37 + k * 101) % ($1 - 1)) + 1 AS id
			FROM generate_series(1, 19) k
		) m
		ON CONFLICT DO NOTHING`, members); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO conversation_members (conversation_id, member_id, role)
		SELECT id, (SELECT min(id) FROM members), 1 FROM conversations ORDER BY id LIMIT $1`, c.memberConversations); err != nil {
		return err
	}
	rows, _ := pool.Query(ctx, "SELECT id FROM conversations ORDER BY id")
	convIDs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	rows, _ = pool.Query(ctx, "SELECT id FROM members ORDER BY id")
	memberIDs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}

	var indexDef string
	if err := pool.QueryRow(ctx, "SELECT pg_get_indexdef('messages_search'::regclass)").Scan(&indexDef); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, "DROP INDEX messages_search"); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rand.New(rand.NewPCG(3, 4)), 1.1, 1, 4999)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if n == c.messages {
			return nil, nil
		}
		i := n
		n++
		words := make([]string, 10)
		for w := range words {
			words[w] = fmt.Sprintf("w%d", zipf.Uint64())
		}
		if i%10_007 == 0 {
			words[rng.IntN(len(words))] = "zebra"
		}
		conv := convIDs[i%len(convIDs)]
		return []any{
			conv, int64(i/len(convIDs) + 1), memberIDs[rng.IntN(len(memberIDs))], fmt.Sprint("c", i),
			strings.Join(words, " "), base.Add(time.Duration(i) * 100 * time.Millisecond),
		}, nil
	})
	copied, err := pool.CopyFrom(ctx, pgx.Identifier{"messages"},
		[]string{"conversation_id", "seq", "sender_id", "client_msg_id", "body", "sent_at"}, src)
	if err != nil {
		return err
	}
	fmt.Printf("copied %d messages in %s\n", copied, time.Since(start).Round(time.Millisecond))
	if _, err := pool.Exec(ctx, `
		UPDATE conversations c SET last_seq = m.last_seq, last_message_at = m.at
		FROM (SELECT conversation_id, max(seq) AS last_seq, max(sent_at) AS at FROM messages GROUP BY 1) m
		WHERE m.conversation_id = c.id`); err != nil {
		return err
	}
	t := time.Now()
	if _, err := pool.Exec(ctx, indexDef); err != nil {
		return err
	}
	fmt.Printf("built the search index in %s\n", time.Since(t).Round(time.Millisecond))
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE messages, conversation_members, conversations, members"); err != nil {
		return err
	}
	fmt.Printf("loaded in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// words are searched for: one in most messages, one in about one in ten,
// and a rare one.
var words = []string{"w0", "w9", "zebra"}

// bench times the first page (20 messages, as SearchMessages asks by
// default) of each case.
func bench(ctx context.Context, pool *pgxpool.Pool, c config) error {
	q := store.New(pool).CustomPlans() // as the handler runs it
	var me, conv int64
	if err := pool.QueryRow(ctx, "SELECT min(id) FROM members").Scan(&me); err != nil {
		return err
	}
	if err := pool.QueryRow(ctx, "SELECT min(conversation_id) FROM conversation_members WHERE member_id = $1", me).Scan(&conv); err != nil {
		return err
	}
	end := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	const pageRows = 21 // a page of 20 and one more, as the handler asks
	type benchCase struct {
		name string
		run  func() (int, error)
	}
	var cases []benchCase
	for _, word := range words {
		for _, in := range []int64{0, conv} {
			name := fmt.Sprintf("all conversations, %q", word)
			if in != 0 {
				name = fmt.Sprintf("one conversation, %q", word)
			}
			cases = append(cases, benchCase{name, func() (int, error) {
				rows, err := q.SearchMessages(ctx, db.SearchMessagesParams{
					MemberID: me, ConversationID: in, Query: word, MaxRows: pageRows,
					BeforeSentAt: end, BeforeConversationID: math.MaxInt64, BeforeSeq: math.MaxInt64,
				})
				return len(rows), err
			}})
		}
	}
	var total int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM messages").Scan(&total); err != nil {
		return err
	}
	for _, word := range words {
		var all, mine int
		if err := pool.QueryRow(ctx, `
			SELECT count(*), count(*) FILTER (WHERE EXISTS (
				SELECT 1 FROM conversation_members cm WHERE cm.conversation_id = m.conversation_id AND cm.member_id = $2))
			FROM messages m WHERE message_search_vector(m.body, m.caption) @@ websearch_to_tsquery('simple', $1)`, word, me).Scan(&all, &mine); err != nil {
			return err
		}
		fmt.Printf("%q is in %d of %d messages, %d of them readable by the searcher\n", word, all, total, mine)
	}
	fmt.Printf("%-32s %6s %9s %9s %9s\n", "case (first page of 20)", "found", "p50", "p99", "max")
	for _, cs := range cases {
		for range 20 { // warm the cache and the prepared statement
			if _, err := cs.run(); err != nil {
				return err
			}
		}
		d := make([]time.Duration, c.runs)
		found := 0
		for i := range d {
			t := time.Now()
			n, err := cs.run()
			if err != nil {
				return err
			}
			d[i], found = time.Since(t), n
		}
		slices.Sort(d)
		fmt.Printf("%-32s %6d %9s %9s %9s\n", cs.name, min(found, 20), pct(d, 50), pct(d, 99), d[len(d)-1].Round(10*time.Microsecond))
	}
	return nil
}

func pct(d []time.Duration, p int) time.Duration {
	return d[(len(d)-1)*p/100].Round(10 * time.Microsecond)
}
