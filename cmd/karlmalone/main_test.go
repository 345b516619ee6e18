package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/karlmalone/karlmalone/push"
	"github.com/karlmalone/karlmalone/server"
)

// helpFlag is one flag as `serve -help` lists it.
type helpFlag struct {
	name, typ, env string
}

var flagLine = regexp.MustCompile(`^  -(\S+)(?: (\S+))?$`)
var envNote = regexp.MustCompile(`\(env (\w+)\)`)

// serveHelp parses the output of `karlmalone serve -help`.
func serveHelp(t *testing.T) []helpFlag {
	t.Helper()
	var out bytes.Buffer
	_, err := parseFlags("serve", []string{"-help"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-help: %v, want flag.ErrHelp", err)
	}
	var flags []helpFlag
	for line := range strings.SplitSeq(out.String(), "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flags = append(flags, helpFlag{name: m[1], typ: m[2]})
			continue
		}
		if len(flags) > 0 && strings.HasPrefix(line, "    \t") {
			if m := envNote.FindStringSubmatch(line); m != nil {
				flags[len(flags)-1].env = m[1]
			}
		}
	}
	if len(flags) == 0 {
		t.Fatalf("no flags in -help output:\n%s", out.String())
	}
	return flags
}

func TestServeHelpListsEveryFlag(t *testing.T) {
	t.Parallel()
	flags := serveHelp(t)
	var names []string
	for _, f := range flags {
		names = append(names, f.name)
		if f.env == "" {
			t.Errorf("-%s names no environment variable", f.name)
		}
	}
	for _, want := range []string{
		"listen", "database-url", "log-level", "log-format", "tls-cert", "tls-key",
		"db-max-conns", "db-connect-timeout", "shutdown-timeout", "read-header-timeout", "idle-timeout", "max-header-bytes",
		"token-ttl", "max-request-bytes", "hash-concurrency", "insecure-fast-password-hash",
		"register-rate", "login-rate-addr", "login-rate-phone-addr", "trusted-proxies", "login-password-change-rate",
		"search-phone-rate", "search-member-rate", "typing-interval", "login-session-sweep-interval", "group-max-invitees",
		"attachment-dir", "max-attachment-bytes", "attachment-url-key", "attachment-url-ttl", "cors-origins",
		"push-shards", "push-queue-size", "push-write-timeout", "push-ping-interval", "push-ping-timeout", "push-read-limit",
		"nats-url", "node-name", "s3-endpoint", "s3-bucket", "s3-prefix", "s3-region", "s3-path-style",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("serve -help does not list -%s", want)
		}
	}
}

// testValue is a valid value for f that differs from every default.
func testValue(f helpFlag) string {
	switch f.name {
	case "log-level":
		return "debug"
	case "log-format":
		return "json"
	case "database-url":
		return "postgres://u@db.example/karlmalone"
	case "cors-origins":
		return "https://app.example.com, https://admin.example.com"
	case "trusted-proxies":
		return "10.0.0.0/8, fd00::/8"
	case "listen":
		return "127.0.0.1:7777"
	case "attachment-url-key":
		return "test-attachment-url-key-of-32-characters"
	}
	switch f.typ {
	case "duration":
		return "17m3s"
	case "int":
		return "77"
	case "value": // interval/burst rates
		return "3s/4"
	case "": // bool
		return "true"
	default:
		return "test-" + f.name
	}
}

// TestEveryLimitIsAFlag sets every flag listed by -help, once by flag and
// once by environment, and checks that both give the same config and that
// every field of server.Config and push.Config (the server's limits and
// timeouts) moved: a field that no flag sets fails here.
func TestEveryLimitIsAFlag(t *testing.T) {
	t.Parallel()
	flags := serveHelp(t)
	var args []string
	env := map[string]string{}
	for _, f := range flags {
		v := testValue(f)
		args = append(args, "-"+f.name+"="+v)
		env[f.env] = v
	}
	none := func(string) string { return "" }
	byFlag, err := parseFlags("serve", args, none, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	byEnv, err := parseFlags("serve", nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("parse env %v: %v", env, err)
	}
	if !reflect.DeepEqual(byFlag, byEnv) {
		t.Errorf("flags and environment disagree:\nflags %+v\n  env %+v", byFlag, byEnv)
	}
	defaults, err := parseFlags("serve", nil, func(k string) string {
		if k == "DATABASE_URL" {
			return "postgres://default@db.example/default"
		}
		return ""
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}

	unchanged := func(what string, got, def reflect.Value, skip ...string) {
		for i := range got.NumField() {
			name := got.Type().Field(i).Name
			if slices.Contains(skip, name) {
				continue
			}
			if fmt.Sprint(got.Field(i)) == fmt.Sprint(def.Field(i)) {
				t.Errorf("%s.%s (%v) is set by no flag", what, name, got.Field(i))
			}
		}
	}
	unchanged("config", reflect.ValueOf(*byFlag), reflect.ValueOf(*defaults), "server", "push")
	unchanged("server.Config", reflect.ValueOf(byFlag.server), reflect.ValueOf(defaults.server))
	// Bus and the event constructors are wiring, not limits.
	unchanged("push.Config", reflect.ValueOf(byFlag.push), reflect.ValueOf(defaults.push), "Bus", "NewEvent", "ResyncEvent")

	// Spot checks of the parsing itself.
	if got := byFlag.server.CORSOrigins; !slices.Equal(got, []string{"https://app.example.com", "https://admin.example.com"}) {
		t.Errorf("CORS origins %q", got)
	}
	if !slices.Equal(byFlag.push.OriginPatterns, byFlag.server.CORSOrigins) {
		t.Errorf("push origins %q, want the CORS origins %q", byFlag.push.OriginPatterns, byFlag.server.CORSOrigins)
	}
	if byFlag.server.MaxAttachmentBytes != 77 || byFlag.push.ReadLimit != 77 || byFlag.push.PingTimeout != 17*time.Minute+3*time.Second {
		t.Errorf("parsed %+v", byFlag.push)
	}
}

func TestServeFlagDefaults(t *testing.T) {
	t.Parallel()
	c, err := parseFlags("serve", nil, func(k string) string {
		return map[string]string{"DATABASE_URL": "postgres://u@db.example/k"}[k]
	}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	// Every default is the one written in defaultConfig, server.DefaultConfig
	// or push.DefaultConfig, and CORS is off.
	want := defaultConfig()
	want.databaseURL = "postgres://u@db.example/k"
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("defaults\n%+v, want\n%+v", *c, want)
	}
	if !reflect.DeepEqual(c.server, server.DefaultConfig()) || !reflect.DeepEqual(c.push, push.DefaultConfig()) {
		t.Errorf("server defaults %+v, push defaults %+v: not the packages' own", c.server, c.push)
	}
	if c.server.CORSOrigins != nil || c.push.OriginPatterns != nil {
		t.Errorf("CORS by default: %q %q", c.server.CORSOrigins, c.push.OriginPatterns)
	}
}

// TestHelpListsCommands: `karlmalone help`, `karlmalone -help` and an
// unknown command name the subcommands.
func TestHelpListsCommands(t *testing.T) {
	t.Parallel()
	none := func(string) string { return "" }
	for _, args := range [][]string{{"help"}, {"-help"}, {"-h"}, {"--help"}, {"serve-all"}} {
		var out bytes.Buffer
		err := run(t.Context(), args, none, &out, nil)
		unknown := args[0] == "serve-all"
		if (err != nil) != unknown {
			t.Errorf("%v: error %v", args, err)
		}
		for _, c := range []string{"serve", "migrate", "help"} {
			if !regexp.MustCompile(`(?m)^  ` + c + ` +\S`).MatchString(out.String()) {
				t.Errorf("%v does not list the command %s:\n%s", args, c, out.String())
			}
		}
		if args[0] == "-help" && !strings.Contains(out.String(), "-push-queue-size") {
			t.Errorf("-help does not list serve's flags:\n%s", out.String())
		}
	}
}

func TestServeFlagErrors(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
	}{
		"wildcard origin":       {args: []string{"-cors-origins=*"}},
		"origin without scheme": {env: map[string]string{"KARLMALONE_CORS_ORIGINS": "app.example.com"}},
		"bad attachment limit":  {env: map[string]string{"KARLMALONE_MAX_ATTACHMENT_BYTES": "lots"}},
		"short URL key":         {args: []string{"-attachment-url-key=short"}},
		"bad push timeout":      {env: map[string]string{"KARLMALONE_PUSH_WRITE_TIMEOUT": "5"}},
		"s3 without a bucket":   {args: []string{"-s3-endpoint=https://s3.example.com"}},
		"s3 endpoint with path": {args: []string{"-s3-endpoint=https://s3.example.com/x", "-s3-bucket=b"}},
	} {
		env := map[string]string{"DATABASE_URL": "postgres://u@db.example/k"}
		for k, v := range tc.env {
			env[k] = v
		}
		if _, err := parseFlags("serve", tc.args, func(k string) string { return env[k] }, &bytes.Buffer{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
