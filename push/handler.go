package push

import (
	"errors"
	"net/http"
	"strings"

	"github.com/coder/websocket"

	"github.com/karlmalone/karlmalone/internal/bearer"
)

// WebSocket subprotocols. The client picks the encoding by offering one of
// the four (the first it offers that the server knows wins); a browser, which
// cannot set headers, authenticates by also offering
// bearerProtocolPrefix+token. The server echoes only the encoding.
//
// The single-event subprotocols carry one karlmalone.v1.Event per WebSocket
// message, for simple clients (websocat, a few lines of script). The batched
// ones carry one karlmalone.v1.EventBatch per message, always, even when it
// holds a single event: a batch holds every event queued for the socket when
// its writer looked, in order, up to Config.BatchEvents events and
// Config.BatchBytes bytes (64 and 16 KiB by default; one event larger than
// that goes alone). Events keep their order within a batch and across
// batches. A batch costs the server one write and the client one read where
// single events cost one each, which is most of the cost of a busy group.
// A client offers "karlmalone.v1.proto.batch, karlmalone.v1.proto" to get
// batches from a server that has them and single events from one that does
// not, and reads Sec-WebSocket-Protocol (the one echoed) to know which.
const (
	SubprotocolProto      = "karlmalone.v1.proto"       // binary Event messages (websocket.MessageBinary)
	SubprotocolJSON       = "karlmalone.v1.json"        // protojson Event text messages (websocket.MessageText)
	SubprotocolProtoBatch = "karlmalone.v1.proto.batch" // binary EventBatch messages
	SubprotocolJSONBatch  = "karlmalone.v1.json.batch"  // protojson EventBatch text messages
	bearerProtocolPrefix  = "karlmalone.bearer."
)

// ErrBadToken is what an Authenticator returns (or wraps) for a token that is
// missing, unknown, expired or revoked: the handler answers 401. Any other
// error means the token could not be checked, and is answered 503.
var ErrBadToken = errors.New("push: invalid bearer token")

// NewHandler returns the GET /v1/push endpoint. It authenticates before the
// upgrade (401 with a short plain body on a missing or rejected token),
// upgrades, registers the socket with h and returns: an idle socket costs the
// library's read loop and no goroutine of ours.
//
// The token comes from "Authorization: Bearer <token>" or, for browsers, from
// the subprotocol "karlmalone.bearer.<token>" offered beside the encoding;
// never from the query string, which ends up in access logs.
func NewHandler(h *Hub, authn Authenticator) http.Handler {
	return &handler{hub: h, authn: authn}
}

type handler struct {
	hub   *Hub
	authn Authenticator
}

func (hd *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := hd.hub
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	token, encoding := handshake(r)
	if token == "" {
		unauthorized(w, "missing bearer token")
		return
	}
	p, err := hd.authn(r.Context(), token)
	if errors.Is(err, ErrBadToken) {
		h.log.Debug("push: authenticate", "remote", r.RemoteAddr, "err", err)
		unauthorized(w, "invalid bearer token")
		return
	}
	if err != nil {
		// The token could not be checked (database down): retry later.
		h.log.Warn("push: authenticate", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "authentication unavailable; retry", http.StatusServiceUnavailable)
		return
	}
	if h.closing.Load() {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	if h.testHookAuthenticated != nil {
		h.testHookAuthenticated(p)
	}

	// Register before the handshake completes, so that once the client sees
	// the 101 every event published afterwards reaches it: a client that
	// connects and then reads history over RPC can miss nothing in between.
	// Frames queued before attach are written right after it.
	enc, _ := encodingOf(encoding) // none offered: binary, one event per message
	c := h.newConn(p, true, enc)
	if err := h.register(c); err != nil {
		if errors.Is(err, ErrTooManyReceivers) {
			// Refused before the upgrade, so the client sees a status, not
			// a socket that closes at once.
			h.log.Info("push: too many receivers", "member", p.MemberID, "limit", h.cfg.MaxPerMember)
			http.Error(w, "too many open push sockets for this member; close one", http.StatusTooManyRequests)
			return
		}
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	// Check the token again now that the socket is registered. A revocation
	// deletes the session and then closes its receivers (CloseSession): if it
	// ran since the first check, it missed this socket and this check fails;
	// if it runs after this check, CloseSession finds the socket.
	if again, err := hd.authn(r.Context(), token); err != nil || again.SessionID != p.SessionID {
		h.shut(c, reasonRevoked, true) // not attached: this only unregisters it
		if err == nil || errors.Is(err, ErrBadToken) {
			h.log.Debug("push: session ended during the handshake", "member", p.MemberID, "session", p.SessionID)
			unauthorized(w, "invalid bearer token")
			return
		}
		h.log.Warn("push: authenticate", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "authentication unavailable; retry", http.StatusServiceUnavailable)
		return
	}
	opts := &websocket.AcceptOptions{OriginPatterns: h.cfg.OriginPatterns}
	if encoding != "" {
		opts.Subprotocols = []string{encoding} // never the bearer subprotocol
	}
	ws, err := websocket.Accept(w, r, opts)
	if err != nil {
		h.log.Debug("push: accept", "remote", r.RemoteAddr, "err", err)
		h.shut(c, reasonGone, true)
		return // Accept has answered
	}
	ws.SetReadLimit(h.cfg.ReadLimit)
	c.attach(ws)
	go h.readLoop(c, ws)
	if h.testHookRegistered != nil {
		h.testHookRegistered(c)
	}
	h.log.Debug("push: connected", "member", p.MemberID, "session", p.SessionID, "encoding", c.enc)
}

// readLoop is the socket's one reader: reading is what answers the peer's
// pings and close frames and sees the connection end. Clients send no data
// messages; one that does is closed with a policy violation. (The library's
// CloseRead does the same but, closing from its own goroutine, waits up to
// 15 s for itself, so the hub would keep publishing to a dead socket.)
func (h *Hub) readLoop(c *conn, ws *websocket.Conn) {
	for {
		_, _, err := ws.Read(h.ctx)
		if err != nil {
			h.shut(c, reasonGone, true)
			return
		}
		h.shut(c, reasonUnexpectedData, false)
	}
}

// handshake extracts the bearer token (the Authorization header first, then
// the bearer subprotocol) and the first encoding subprotocol the client
// offered that the server knows ("" when none: binary protobuf, one event
// per message).
func handshake(r *http.Request) (token, encoding string) {
	token = bearer.Token(r.Header.Get("Authorization"))
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			p = strings.TrimSpace(p)
			switch {
			case strings.HasPrefix(p, bearerProtocolPrefix):
				if token == "" {
					token = p[len(bearerProtocolPrefix):]
				}
			case encoding == "":
				if _, ok := encodingOf(p); ok {
					encoding = p
				}
			}
		}
	}
	return token, encoding
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="karlmalone"`)
	http.Error(w, msg, http.StatusUnauthorized)
}
