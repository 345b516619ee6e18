#!/usr/bin/env bash
# Installs the npm packages of package-lock.json (exact versions) into
# node_modules: `make generate`, `make lint` and the web tests need them, and a
# fresh clone has none.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Node.js 20 or later comes with the machine (Debian 12's own nodejs is 18,
# too old for the browser-compatible WebSocket the tests use).
if ! command -v npm >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
	echo "npm-deps: Node.js 20 or later with npm is needed (found: $(node --version 2>/dev/null || echo none))" >&2
	exit 1
fi
# No install scripts: none of the packages needs one (esbuild finds its
# platform binary through its optional dependency).
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
touch node_modules/.package-lock.json # newer than the lock: make sees it current
