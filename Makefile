# KarlMalone. `make run` serves on :5288 with a private PostgreSQL under .data/
# (unless DATABASE_URL is set); `make test` runs every test against a real
# PostgreSQL that the test harness starts itself.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(CURDIR)/bin:$(PATH)

GO      ?= go
TOOLS   := bin/buf bin/sqlc bin/protoc-gen-go bin/protoc-gen-connect-go bin/protoc-gen-connect-openapi
TOOLPKG := github.com/bufbuild/buf/cmd/buf github.com/sqlc-dev/sqlc/cmd/sqlc \
           google.golang.org/protobuf/cmd/protoc-gen-go connectrpc.com/connect/cmd/protoc-gen-connect-go \
           github.com/sudorandom/protoc-gen-connect-openapi

.PHONY: run test build generate checkgenerate lint breaking tools clean cluster test-web web-deps

# The web side (web/client, web/app, gen/es): npm packages pinned in
# package-lock.json, installed by `npm ci` whenever the lock is newer than
# node_modules (a fresh clone included).
NPM_STAMP := node_modules/.package-lock.json

run: build
	bin/devpg -dir .data/postgres -db karlmalone -- bin/karlmalone serve

# Three nodes on 5288–5290 joined by one nats-server (4222), on one private
# PostgreSQL (.data/cluster); Ctrl-C stops them all. See docs/CLUSTER.md.
CLUSTER_NODES ?= 3
CLUSTER_PORT ?= 5288
CLUSTER_NATS_PORT ?= 4222
cluster: build bin/nats-server
	bin/devpg -dir .data/cluster/postgres -db karlmalone -- \
		bin/cluster -nodes $(CLUSTER_NODES) -port $(CLUSTER_PORT) -nats-port $(CLUSTER_NATS_PORT) -dir .data/cluster

# The NATS server, from the Go module pinned in tools/go.mod.
bin/nats-server: tools/go.mod tools/go.sum
	cd tools && $(GO) build -o ../bin/ github.com/nats-io/nats-server/v2

# The second line runs the push stress test at the issue's full size
# (50 senders × 200 messages into a group of 100 online members), which takes
# minutes under -race; with -race it runs a tenth of that.
test:
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run '^TestPushStressGroupFanout$$' -v ./server/
	$(MAKE) test-web

# The SDK's tests and the browser tests, against the server binary on a
# private PostgreSQL; installs npm packages and Chromium when missing.
test-web: build
	web/scripts/test.sh

build:
	$(GO) build -o bin/ ./cmd/...

# Code generators, pinned in tools/go.mod so every machine writes the same bytes.
tools: $(TOOLS)
$(TOOLS) &: tools/go.mod tools/go.sum
	cd tools && $(GO) build -o ../bin/ $(TOOLPKG)

web-deps: $(NPM_STAMP)
$(NPM_STAMP): package.json package-lock.json web/client/package.json web/app/package.json
	web/scripts/npm-deps.sh

# buf writes gen/karlmalone, gen/openapi and gen/es (TypeScript, with the
# protoc-gen-es of the npm lock), sqlc writes gen/db, esbuild writes the chat
# app's bundle web/app/dist (embedded by the server; see webapp.go). Each output
# is wiped first so a removed source leaves no stale file (buf's own `clean`
# would wipe gen/db too).
generate: $(TOOLS) $(NPM_STAMP)
	rm -rf gen/karlmalone gen/openapi gen/es && buf generate
	rm -rf gen/db && sqlc generate
	rm -rf web/app/dist && node web/build.mjs app

# Fails when gen/ or the app bundle is not exactly what the sources generate.
GENERATED := gen web/app/dist
checkgenerate: generate
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
		echo "generated files are stale: run 'make generate' and commit the result" >&2; \
		git status --porcelain -- $(GENERATED) >&2; git diff --stat -- $(GENERATED) >&2; exit 1; fi

# sqlc vet prepares every query against the migrated schema and applies the
# rules in sqlc.yaml; it needs a PostgreSQL server, so it runs under devpg (a
# private cluster in .data/lint-postgres, or DATABASE_URL's server when set,
# where sqlc creates a database named for the schema's hash).
lint: $(TOOLS) $(NPM_STAMP)
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); echo "gofmt needed" >&2; exit 1; }
	buf lint
	buf format -d --exit-code
	$(MAKE) breaking
	$(GO) run ./cmd/devpg -dir .data/lint-postgres -db sqlc_vet -- sqlc vet
	node_modules/.bin/tsc -p web/tsconfig.json
	node_modules/.bin/tsc -p web/tsconfig.node.json

# The API only grows: buf breaking (FILE rules, buf.yaml) compares the proto
# with main's where this branch left it (the merge base, so fields main gained
# since are not taken for fields this branch removed) and refuses a removed or
# renumbered field, a renamed one, a changed type or a removed RPC. A clone
# without a local main fetches it from origin first; on main itself the check
# compares main with itself and passes.
BREAKING_BASE ?= main
breaking: $(TOOLS)
	@git rev-parse -q --verify 'refs/heads/$(BREAKING_BASE)' >/dev/null || git fetch -q origin '$(BREAKING_BASE):$(BREAKING_BASE)'
	buf breaking --against ".git#ref=$$(git merge-base HEAD '$(BREAKING_BASE)')"

clean:
	rm -rf bin .data node_modules .build web/artifacts

# Fuzzing (docs/TESTING.md): each target in turn for FUZZTIME, searching for
# inputs beyond the checked-in corpus (server/testdata/fuzz), on one private
# PostgreSQL that every fuzz worker shares (.data/fuzz-postgres). An input
# that fails is written to the corpus: commit it with the fix. Plain
# `go test` (make test, CI) runs the corpus only.
FUZZTIME ?= 30s
FUZZ_TARGETS := FuzzPageToken FuzzRequest
.PHONY: fuzz
fuzz: build
	bin/devpg -dir .data/fuzz-postgres -db karlmalone_fuzz -- bash -c 'for t in $(FUZZ_TARGETS); do \
		$(GO) test -run "^$$" -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./server/ || exit 1; done'

# Load test: a fresh server on a private PostgreSQL (.data/bench-postgres)
# under the standard loadgen scenarios; see docs/BENCHMARKS.md.
.PHONY: bench
bench: build
	cmd/loadgen/bench.sh
