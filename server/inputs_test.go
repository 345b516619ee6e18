package server_test

// Untrusted input against every method: the generated-input sweep
// (TestGeneratedInputSweep) and the request fuzz target (FuzzRequest) share
// what is here: the methods, read from the generated service descriptors; a
// seeded generator of request bodies, protobuf and JSON, well-formed and not;
// and probe, which sends one body the way any HTTP client can and says
// whether the answer is one the API allows. Neither a hand list of methods
// nor a hand list of inputs: a method added to proto/ is swept and fuzzed
// without a line here.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// apiMethod is one RPC of the API.
type apiMethod struct {
	procedure string // "/karlmalone.v1.ChatService/SendMessage"
	input     protoreflect.MessageType
	streaming bool // server-streaming: Connect's enveloped framing
}

// apiMethods lists every method of every service in the API's package, from
// the descriptors the generated code registers.
func apiMethods(t testing.TB) []apiMethod {
	t.Helper()
	pkg := v1.File_karlmalone_v1_chat_proto.Package()
	var out []apiMethod
	protoregistry.GlobalFiles.RangeFilesByPackage(pkg, func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				in, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
				if err != nil {
					t.Fatalf("no Go type for %s: %v", md.Input().FullName(), err)
				}
				out = append(out, apiMethod{
					procedure: fmt.Sprintf("/%s/%s", sd.FullName(), md.Name()),
					input:     in,
					streaming: md.IsStreamingServer(),
				})
			}
		}
		return true
	})
	if len(out) < 30 {
		t.Fatalf("found %d methods in %s: the descriptors are not registered", len(out), pkg)
	}
	return out
}

// sweeper registers a member with a contact (peer), a group and a message
// in each conversation, so that the small ids the generator favours name
// real rows and bodies get past "not found" into the code that acts.
func sweeper(t testing.TB, e *env, peer *client) *client {
	t.Helper()
	me := e.register(t, "sweeper")
	makeContacts(t, me, peer)
	group := newGroup(t, me, peer)
	chatSend(t, me, peerText(peer.ID, "direct", "hello"))
	chatSend(t, me, groupText(group.GetId(), "group", "hello all"))
	return me
}

// A body goes as protobuf or as JSON.
const (
	asProto = iota
	asJSON
)

// inputGen makes request bodies from a seed: mostly valid encodings of
// messages filled with the values that break things (zero, negative and
// extreme numbers, empty, huge, NUL-bearing and odd strings, unknown enum
// values, long lists), and some that are not valid encodings at all.
type inputGen struct{ r *rand.Rand }

func newInputGen(seed uint64) *inputGen {
	return &inputGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// body is one request body for in, in the given encoding.
func (g *inputGen) body(in protoreflect.MessageType, encoding int) []byte {
	msg := in.New()
	g.fill(msg, 0)
	switch n := g.r.IntN(10); {
	case encoding == asProto && n < 7:
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(msg.Interface())
		return b
	case encoding == asProto && n < 9:
		b, _ := proto.Marshal(msg.Interface())
		return g.mutate(b)
	case encoding == asJSON && n < 6:
		if b, err := protojson.Marshal(msg.Interface()); err == nil {
			return b
		}
		return g.looseJSON(in.Descriptor())
	case encoding == asJSON && n < 9:
		return g.looseJSON(in.Descriptor())
	case encoding == asJSON:
		b, _ := protojson.Marshal(msg.Interface())
		return g.mutate(b)
	}
	return g.bytes(64)
}

// fill sets about two fields in three; setting a member of a oneof clears
// the one set before, so a oneof ends with at most one.
func (g *inputGen) fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if g.r.IntN(3) == 0 || fd.IsMap() {
			continue
		}
		if (fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind) && depth >= 3 {
			continue
		}
		if fd.IsList() {
			l := m.Mutable(fd).List()
			for range g.count() {
				if fd.Kind() == protoreflect.MessageKind {
					e := l.NewElement()
					g.fill(e.Message(), depth+1)
					l.Append(e)
				} else {
					l.Append(g.scalar(fd))
				}
			}
			continue
		}
		if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
			sub := m.NewField(fd)
			g.fill(sub.Message(), depth+1)
			m.Set(fd, sub)
			continue
		}
		m.Set(fd, g.scalar(fd))
	}
}

// count is a list's length: usually short, sometimes past any cap.
func (g *inputGen) count() int {
	switch g.r.IntN(8) {
	case 0:
		return 0
	case 1:
		return 200 + g.r.IntN(2000)
	}
	return 1 + g.r.IntN(5)
}

func (g *inputGen) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(g.r.IntN(2) == 0)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		if g.r.IntN(4) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(g.integer(32)))
		}
		return protoreflect.ValueOfEnum(vals.Get(g.r.IntN(vals.Len())).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(g.integer(32)))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(g.integer(64))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(g.integer(32)))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(g.integer(64)))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(g.float()))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(g.float())
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(g.text())
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(g.bytes(4096))
	}
	panic("inputGen: no scalar of kind " + fd.Kind().String())
}

// integer favours the ids a fixture holds (small numbers) and the edges.
func (g *inputGen) integer(bits int) int64 {
	hi, lo := int64(math.MaxInt64), int64(math.MinInt64)
	if bits == 32 {
		hi, lo = math.MaxInt32, math.MinInt32
	}
	switch g.r.IntN(10) {
	case 0:
		return 0
	case 1:
		return -1 - g.r.Int64N(3)
	case 2:
		return hi - g.r.Int64N(2)
	case 3:
		return lo + g.r.Int64N(2)
	case 4:
		if bits == 32 {
			return int64(int32(g.r.Uint32()))
		}
		return int64(g.r.Uint64())
	case 5:
		return 1 << (1 + g.r.IntN(bits-2)) // powers of two: 1<<53 and friends
	}
	return 1 + g.r.Int64N(60)
}

func (g *inputGen) float() float64 {
	return []float64{0, -1, 1e308, math.Inf(1), math.NaN(), g.r.Float64()}[g.r.IntN(6)]
}

// Strings that have broken servers: control characters (NUL above all,
// which PostgreSQL refuses in text), limits and one past them, odd Unicode,
// text that looks like SQL, markup, phones and URLs.
var oddTexts = []string{
	"", " ", "\x00", "a\x00b", "nul at the end\x00", "\t\r\n", "\x7f\x1b[2J",
	"\u202egnp.exe", "\ufeffbom", "\u2028\u2029", "e\u0301\u0301\u0301", "😀👍🏽", "\U0010ffff", "\uFFFD",
	"'; DROP TABLE members; --", "%s%n%x", "<script>alert(1)</script>", "../../etc/passwd",
	"+14155550100", "+1", "+999999999999999999", "14155550100", "+1555\x000100",
	"http://example.com/a.png", "https://", "javascript:alert(1)", "http://[::1", "ftp://x",
	"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
}

func (g *inputGen) text() string {
	switch g.r.IntN(6) {
	case 0, 1:
		return oddTexts[g.r.IntN(len(oddTexts))]
	case 2: // around a length limit, sometimes with a NUL in it
		n := []int{31, 32, 33, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025, 3999, 4000, 4001, 70000}[g.r.IntN(16)]
		s := []rune(strings.Repeat("x", n))
		if g.r.IntN(3) == 0 {
			s[g.r.IntN(n)] = 0
		}
		return string(s)
	case 3: // page tokens: base64url of the shapes page.go decodes
		b := make([]byte, 1+8*(1+g.r.IntN(2)))
		b[0] = byte((len(b) - 1) / 8)
		for i := 1; i < len(b); i += 8 {
			binary.BigEndian.PutUint64(b[i:], uint64(g.integer(64)))
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	var sb strings.Builder
	for range 1 + g.r.IntN(40) {
		sb.WriteRune(rune(g.r.IntN(0x3000)))
	}
	return strings.ToValidUTF8(sb.String(), "?")
}

func (g *inputGen) bytes(most int) []byte {
	b := make([]byte, g.r.IntN(most+1))
	for i := range b {
		b[i] = byte(g.r.Uint32())
	}
	return b
}

// mutate flips, cuts or pads a valid encoding into one that may not be.
func (g *inputGen) mutate(b []byte) []byte {
	b = bytes.Clone(b)
	switch g.r.IntN(4) {
	case 0:
		if len(b) > 0 {
			return b[:g.r.IntN(len(b))]
		}
	case 1:
		return append(b, g.bytes(16)...)
	}
	for range 1 + g.r.IntN(4) {
		if len(b) > 0 {
			b[g.r.IntN(len(b))] = byte(g.r.Uint32())
		}
	}
	return b
}

// looseJSON is an object with the message's field names holding any JSON
// value at all: the wrong type, null, nested objects, numbers past int64,
// numbers as strings and strings with escapes.
func (g *inputGen) looseJSON(md protoreflect.MessageDescriptor) []byte {
	obj := map[string]json.RawMessage{}
	fields := md.Fields()
	for i := range fields.Len() {
		if g.r.IntN(2) == 0 {
			obj[fields.Get(i).JSONName()] = g.anyJSON(2)
		}
	}
	if g.r.IntN(5) == 0 {
		obj["noSuchField"] = g.anyJSON(1)
	}
	b, _ := json.Marshal(obj)
	return b
}

func (g *inputGen) anyJSON(depth int) json.RawMessage {
	choices := []string{
		`null`, `true`, `0`, `-1`, `1.5`, `1e400`, `99999999999999999999999`, `"9223372036854775808"`,
		`"-9223372036854775809"`, `"1"`, `""`, `"\u0000"`, `"a\u0000b"`, `"\ud800"`, `"2026-12-02T00:00:00Z"`,
		`"10000-01-01T00:00:00Z"`, `"0000-12-31T23:59:59Z"`, `[]`, `{}`, `"AAAA"`, `"GROUP_ROLE_OWNER"`,
	}
	switch n := g.r.IntN(len(choices) + 3); {
	case n < len(choices):
		return json.RawMessage(choices[n])
	case depth > 0 && n == len(choices):
		return json.RawMessage(`[` + string(g.anyJSON(depth-1)) + `,` + string(g.anyJSON(depth-1)) + `]`)
	case depth > 0 && n == len(choices)+1:
		return json.RawMessage(`{"id":` + string(g.anyJSON(depth-1)) + `}`)
	}
	b, _ := json.Marshal(g.text())
	return b
}

// allowedCodes are the answers untrusted input may get. Anything else (an
// HTTP 5xx, internal, unknown, unavailable, a timeout) is a defect: input
// must never reach a 500.
var allowedCodes = map[connect.Code]bool{
	connect.CodeInvalidArgument:    true,
	connect.CodeUnauthenticated:    true,
	connect.CodePermissionDenied:   true,
	connect.CodeNotFound:           true,
	connect.CodeAlreadyExists:      true,
	connect.CodeFailedPrecondition: true,
	connect.CodeResourceExhausted:  true,
	connect.CodeOutOfRange:         true,
}

// probeAnswer is what the server said to one body.
type probeAnswer struct {
	status int
	code   connect.Code // 0: ok
	msg    string
}

func (a probeAnswer) String() string {
	if a.code == 0 {
		return fmt.Sprintf("HTTP %d ok", a.status)
	}
	return fmt.Sprintf("HTTP %d %v: %s", a.status, a.code, a.msg)
}

// verdict says what is wrong with answer a to body, or "" when nothing is.
// Any input may be refused, never answered with a 5xx; and a body that does
// not decode into the method's request (as Connect decodes it) must be
// refused as invalid, unless a missing token or the size limit refused it
// before it was read.
func verdict(m apiMethod, encoding int, body []byte, a probeAnswer) string {
	if a.status >= 500 || (a.code != 0 && !allowedCodes[a.code]) {
		return "an answer no input may get: " + a.String()
	}
	if len(body) == 0 || decodes(m, encoding, body) {
		return ""
	}
	switch a.code {
	case connect.CodeInvalidArgument, connect.CodeUnauthenticated, connect.CodeResourceExhausted:
		return ""
	}
	return "a body that does not decode was answered " + a.String() + ", want invalid_argument"
}

// decodes says whether body is a request of m, with Connect's codecs'
// options (JSON ignores unknown fields).
func decodes(m apiMethod, encoding int, body []byte) bool {
	msg := m.input.New().Interface()
	if encoding == asJSON {
		return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, msg) == nil
	}
	return proto.Unmarshal(body, msg) == nil
}

// probe sends body to m over the Connect protocol with a plain HTTP client,
// with token as bearer unless it is empty. A server stream that opens is
// read for a moment and then closed by the client: it answered ok.
func probe(ctx context.Context, hc *http.Client, baseURL string, m apiMethod, encoding int, token string, body []byte) (probeAnswer, error) {
	ctype := map[int]string{asProto: "proto", asJSON: "json"}[encoding]
	if m.streaming {
		ctype = "connect+" + ctype
		env := make([]byte, 5, 5+len(body))
		binary.BigEndian.PutUint32(env[1:], uint32(len(body)))
		body = append(env, body...)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+m.procedure, bytes.NewReader(body))
	if err != nil {
		return probeAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/"+ctype)
	req.Header.Set("Connect-Protocol-Version", "1")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := hc.Do(req)
	if err != nil {
		return probeAnswer{}, err
	}
	defer res.Body.Close()
	a := probeAnswer{status: res.StatusCode}
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4<<20))
		return a, a.parseError(b)
	}
	if !m.streaming {
		_, err := io.Copy(io.Discard, res.Body)
		return a, err
	}
	return a, a.readStream(res.Body, cancel)
}

// parseError reads a Connect error body ({"code": "...", "message": "..."}).
func (a *probeAnswer) parseError(b []byte) error {
	var e struct{ Code, Message string }
	if err := json.Unmarshal(b, &e); err != nil || e.Code == "" {
		a.code, a.msg = connect.CodeUnknown, fmt.Sprintf("not a Connect error: %q", b)
		return nil
	}
	if err := a.code.UnmarshalText([]byte(e.Code)); err != nil {
		a.code = connect.CodeUnknown
	}
	a.msg = e.Message
	return nil
}

// streamGrace is how long an opened stream is watched for an error before
// the client takes it as open and hangs up.
const streamGrace = 50 * time.Millisecond

// readStream reads Connect envelopes until the end-stream message (which
// carries the error, if any) or, for a stream that stays open, until
// streamGrace passes and stop hangs up.
func (a *probeAnswer) readStream(body io.Reader, stop func()) error {
	t := time.AfterFunc(streamGrace, stop)
	defer t.Stop()
	for {
		head := make([]byte, 5)
		if _, err := io.ReadFull(body, head); err != nil {
			return nil // hung up on an open stream: ok
		}
		msg := make([]byte, binary.BigEndian.Uint32(head[1:]))
		if _, err := io.ReadFull(body, msg); err != nil {
			return nil
		}
		if head[0]&2 == 0 {
			continue // an event: the stream is open
		}
		var end struct{ Error json.RawMessage }
		if err := json.Unmarshal(msg, &end); err != nil {
			return fmt.Errorf("bad end-stream message %q: %w", msg, err)
		}
		if len(end.Error) > 0 {
			return a.parseError(end.Error)
		}
		return nil
	}
}
