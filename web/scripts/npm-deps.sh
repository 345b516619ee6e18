#!/usr/bin/env bash
# Installs the npm packages of package-lock.json (exact versions) into
# node_modules: `make generate`, `make lint` and the web tests need them, and a
# fresh clone has none. Node.js and npm come with the machine (or Debian's
# nodejs package).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v npm >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "npm-deps: installing Debian's nodejs and npm" >&2
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
	else
		echo "npm-deps: Node.js 20 or later and npm are needed; install them (Debian: apt-get install nodejs npm)" >&2
		exit 1
	fi
fi
# No install scripts: none of the packages needs one (esbuild finds its
# platform binary through its optional dependency).
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
touch node_modules/.package-lock.json # newer than the lock: make sees it current
