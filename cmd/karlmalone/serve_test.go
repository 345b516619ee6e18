package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/gen/karlmalone/v1/karlmalonev1connect"
	"github.com/karlmalone/karlmalone/internal/natstest"
	"github.com/karlmalone/karlmalone/internal/s3test"
	"github.com/karlmalone/karlmalone/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// server runs the real binary's run() on a free port and returns its address
// and a stop function that waits for run to return.
func startServer(t *testing.T, extraArgs ...string) (addr string, stop func() error, logs *lockedBuffer) {
	t.Helper()
	env := map[string]string{"DATABASE_URL": testdb.NewURL(t), "KARLMALONE_ATTACHMENT_DIR": t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	logs = &lockedBuffer{}
	// No drain period unless a test asks for one: nothing balances load here.
	args := append([]string{"serve", "-listen", "127.0.0.1:0", "-insecure-fast-password-hash", "-log-level", "debug", "-shutdown-drain", "0"}, extraArgs...)
	go func() { done <- run(ctx, args, func(k string) string { return env[k] }, logs, ready) }()
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("run returned before serving: %v\n%s", err, logs)
	}
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { stop() })
	return addr, stop, logs
}

// TestServeEndToEnd runs the server as `make run` does and talks to it over
// HTTP/1.1 (Connect JSON), h2c (gRPC) and WebSocket, then shuts it down:
// the socket is closed with "going away" and run returns cleanly.
func TestServeEndToEnd(t *testing.T) {
	addr, stop, logs := startServer(t)
	base := "http://" + addr
	ctx := t.Context()

	res, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "KarlMalone") || !strings.Contains(string(body), "/openapi.yaml") {
		t.Fatalf("GET / = %d %q", res.StatusCode, body)
	}

	members := karlmalonev1connect.NewMemberServiceClient(http.DefaultClient, base, connect.WithProtoJSON())
	if _, err := members.Register(ctx, &v1.RegisterRequest{Phone: "+14155550123", Password: "s3cret-pass", Nickname: "Karl"}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	grpc := karlmalonev1connect.NewMemberServiceClient(&http.Client{Transport: h2c}, base, connect.WithGRPC())
	login, err := grpc.Login(ctx, &v1.LoginRequest{Phone: "+14155550123", Password: "s3cret-pass"})
	if err != nil {
		t.Fatalf("Login over gRPC/h2c: %v", err)
	}

	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/push", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + login.GetAccessToken()}},
	})
	if err != nil {
		t.Fatalf("dial push: %v", err)
	}
	defer ws.CloseNow()
	// Read as a real client does, all along: a socket nobody reads cannot
	// answer the close handshake, and the server then drops it unanswered.
	readErr := make(chan error, 1)
	go func() {
		_, _, err := ws.Read(ctx)
		readErr <- err
	}()

	if err := stop(); err != nil {
		t.Fatalf("run returned %v\n%s", err, logs)
	}
	err = <-readErr
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Fatalf("push socket ended with %v, want going away", err)
	}
	if !strings.Contains(logs.String(), "stopped") {
		t.Fatalf("no clean stop in the log:\n%s", logs)
	}
}

// TestServeTLS serves HTTPS with HTTP/2 when given a certificate.
func TestServeTLS(t *testing.T) {
	certFile, keyFile, pool := selfSignedCert(t)
	addr, _, _ := startServer(t, "-tls-cert", certFile, "-tls-key", keyFile)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	client := &http.Client{Transport: tr}
	members := karlmalonev1connect.NewMemberServiceClient(client, "https://"+addr, connect.WithGRPC())
	if _, err := members.Register(t.Context(), &v1.RegisterRequest{Phone: "+14155550124", Password: "s3cret-pass", Nickname: "tls"}); err != nil {
		t.Fatalf("gRPC over TLS: %v", err)
	}
	res, err := client.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Fatalf("served %s over TLS, want HTTP/2", res.Proto)
	}
}

// TestRunFailsClearly: without a database, run says what to do.
func TestRunFailsClearly(t *testing.T) {
	err := run(t.Context(), []string{"serve"}, func(string) string { return "" }, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Fatalf("run without a database = %v; want an error naming DATABASE_URL", err)
	}
	err = run(t.Context(), []string{"frobnicate"}, func(string) string { return "" }, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("run frobnicate = %v", err)
	}
}

func selfSignedCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDebugListen: the profiler is served only on its own address, and only
// when asked for.
func TestDebugListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	debugAddr := ln.Addr().String()
	ln.Close()
	addr, _, _ := startServer(t, "-debug-listen", debugAddr)
	for url, want := range map[string]int{
		"http://" + debugAddr + "/debug/pprof/": http.StatusOK,
		"http://" + addr + "/debug/pprof/":      http.StatusNotFound,
	} {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Fatalf("GET %s = %d, want %d", url, res.StatusCode, want)
		}
	}
}

// TestServeClusterFlags runs a node with NATS and an S3 store: it joins NATS
// while it serves and leaves on shutdown; a bucket that is not there stops it
// at startup.
func TestServeClusterFlags(t *testing.T) {
	ns := natstest.New(t)
	s3 := s3test.New(t)
	_, stop, logs := startServer(t, "-nats-url", ns.URL, "-node-name", "node-x",
		"-s3-endpoint", s3.URL, "-s3-bucket", s3.Bucket, "-s3-path-style")
	if n := ns.Clients(); n != 1 {
		t.Errorf("%d NATS clients while serving, want 1", n)
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v\n%s", err, logs)
	}
	for _, want := range []string{"attachments in S3", "connected to NATS", "node=node-x"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %q in the log:\n%s", want, logs)
		}
	}
	env := map[string]string{"DATABASE_URL": testdb.NewURL(t)}
	err := run(t.Context(), []string{"serve", "-listen", "127.0.0.1:0", "-s3-endpoint", s3.URL, "-s3-bucket", "missing", "-s3-path-style"},
		func(k string) string { return env[k] }, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("run with a missing bucket: %v", err)
	}
}
