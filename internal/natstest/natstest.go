// Package natstest runs a real NATS server inside the test process, on a
// loopback port of its own, so tests of the cluster need nothing installed.
package natstest

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is a NATS server that a test can stop and start again on the same
// address (clients reconnect to it as to a restarted production server).
type Server struct {
	tb   testing.TB
	mu   sync.Mutex
	opts server.Options
	s    *server.Server // nil while stopped
	// URL is the address clients connect to; it stays the same across Stop
	// and Start.
	URL string
}

// New starts a server; it is shut down when the test ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	ns := &Server{tb: tb, opts: server.Options{
		Host:   "127.0.0.1",
		Port:   -1, // any free port; kept for restarts
		NoLog:  true,
		NoSigs: true,
	}}
	ns.Start()
	ns.URL = ns.s.ClientURL()
	ns.opts.Port = ns.s.Addr().(*net.TCPAddr).Port
	tb.Cleanup(ns.Stop)
	return ns
}

// Start starts the server (again); it fails the test if it is not ready
// within 10 s.
func (ns *Server) Start() {
	ns.tb.Helper()
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.s != nil {
		return
	}
	opts := ns.opts // the server keeps and changes its options
	s, err := server.NewServer(&opts)
	if err != nil {
		ns.tb.Fatalf("natstest: new server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		ns.tb.Fatalf("natstest: server on port %d not ready", ns.opts.Port)
	}
	ns.s = s
}

// Stop shuts the server down, cutting every client off. Idempotent.
func (ns *Server) Stop() {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.s == nil {
		return
	}
	ns.s.Shutdown()
	ns.s.WaitForShutdown()
	ns.s = nil
}

// Clients is the number of clients connected now (0 while stopped).
func (ns *Server) Clients() int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.s == nil {
		return 0
	}
	return ns.s.NumClients()
}

func (ns *Server) String() string { return fmt.Sprintf("nats-server at %s", ns.URL) }

// Proxy is a path to the server that a test can cut, as a failed network
// or a killed process would: clients that connect through it lose the
// server while everyone else keeps it.
type Proxy struct {
	// URL is the address to give clients instead of the server's.
	URL string

	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	cut    bool
	wg     sync.WaitGroup
}

// Proxy starts a proxy to the server; it closes when the test ends.
func (ns *Server) Proxy() *Proxy {
	ns.tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ns.tb.Fatalf("natstest: proxy: %v", err)
	}
	p := &Proxy{
		URL:    "nats://" + ln.Addr().String(),
		ln:     ln,
		target: fmt.Sprintf("127.0.0.1:%d", ns.opts.Port),
		conns:  make(map[net.Conn]struct{}),
	}
	p.wg.Go(p.accept)
	ns.tb.Cleanup(p.close)
	return p
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(c) })
	}
}

func (p *Proxy) pipe(c net.Conn) {
	defer p.drop(c)
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		s.Close()
		return
	}
	p.conns[s] = struct{}{}
	p.mu.Unlock()
	defer p.drop(s)
	done := make(chan struct{}, 2)
	go func() { copyAll(s, c); done <- struct{}{} }()
	go func() { copyAll(c, s); done <- struct{}{} }()
	<-done
}

func copyAll(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) drop(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// Cut closes every connection through the proxy and refuses new ones until Mend.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Mend lets connections through again.
func (p *Proxy) Mend() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

func (p *Proxy) close() {
	p.Cut()
	p.ln.Close()
	p.wg.Wait()
}
