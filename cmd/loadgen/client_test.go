package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// TestRPCProtocols: -rpc-protocol http1 sends RPCs over HTTP/1.1, h2c over
// HTTP/2 without TLS, each member always through the same connection pool.
func TestRPCProtocols(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	protos := map[string]int{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		protos[r.Proto]++
		mu.Unlock()
		http.Error(w, "nothing here", http.StatusNotFound)
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	defer srv.Close()

	for _, tc := range []struct {
		protocol, want string
		conns, pools   int
	}{
		{rpcHTTP1, "HTTP/1.1", 8, 1},
		{rpcH2C, "HTTP/2.0", 3, 3},
	} {
		cl, err := newClients(clientOptions{addrs: []string{srv.URL}, protocol: tc.protocol, h2Conns: tc.conns, maxConns: 4, pushEncoding: "proto.batch"})
		if err != nil {
			t.Fatal(err)
		}
		if len(cl.nodes[0].rpcs) != tc.pools {
			t.Errorf("%s: %d connection pools, want %d", tc.protocol, len(cl.nodes[0].rpcs), tc.pools)
		}
		m := &member{idx: 4}
		if cl.rpc(m) != cl.nodes[0].rpcs[4%tc.pools] {
			t.Errorf("%s: member 4 not on pool %d", tc.protocol, 4%tc.pools)
		}
		if _, err := cl.rpc(m).member.GetMe(context.Background(), &v1.GetMeRequest{}); err == nil {
			t.Fatalf("%s: GetMe succeeded against a 404 server", tc.protocol)
		}
		mu.Lock()
		if protos[tc.want] != 1 {
			t.Errorf("%s: requests by protocol %v, want one %s", tc.protocol, protos, tc.want)
		}
		clear(protos)
		mu.Unlock()
	}
}

// TestNodesSpread: with -addrs, member (or socket) i calls and connects to
// node i mod N.
func TestNodesSpread(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	hits := map[string][]string{}
	var urls []string
	for _, name := range []string{"a", "b", "c"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hits[name] = append(hits[name], r.URL.Path)
			mu.Unlock()
			http.Error(w, "nothing here", http.StatusNotFound)
		}))
		defer srv.Close()
		urls = append(urls, srv.URL)
	}
	cl, err := newClients(clientOptions{addrs: urls, protocol: rpcHTTP1, maxConns: 4, pushEncoding: "proto.batch"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		cl.rpc(&member{idx: i + 3}).member.GetMe(context.Background(), &v1.GetMeRequest{})
		cl.dialPush(context.Background(), i, "token", nil)
	}
	want := map[string][]string{}
	for _, name := range []string{"a", "b", "c"} {
		want[name] = []string{"/karlmalone.v1.MemberService/GetMe", "/v1/push"}
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(hits) != fmt.Sprint(want) {
		t.Errorf("requests by node: %v, want %v", hits, want)
	}
}
