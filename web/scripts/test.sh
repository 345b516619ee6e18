#!/usr/bin/env bash
# The web tests (`make test` runs them after the Go tests): the SDK's tests
# against a real server (web/client/test) and the browser tests in headless
# Chromium (web/e2e). Each test file starts its own server (bin/karlmalone,
# built by `make build`) on a private PostgreSQL. Installs the npm packages and
# Chromium when missing. Screenshots and server logs go to web/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -e node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
	web/scripts/npm-deps.sh
fi
web/scripts/chromium.sh
if [ ! -x bin/karlmalone ] || [ ! -x bin/devpg ]; then
	echo "test.sh: run 'make build' first (bin/karlmalone, bin/devpg)" >&2
	exit 1
fi
node web/build.mjs tests
rm -rf web/artifacts
mkdir -p web/artifacts
flags=()
# Node 20 has the browser's WebSocket behind a flag; 22 and later by default.
if [ "$(node -p 'typeof WebSocket')" = undefined ]; then
	flags+=(--experimental-websocket)
fi
# One file at a time: each runs a server and a PostgreSQL (and Chromium) on a
# two-core machine.
exec node "${flags[@]}" --test --test-concurrency=1 --test-timeout=300000 .build/web-tests/*.test.mjs
