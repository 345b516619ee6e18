#!/usr/bin/env bash
# Makes sure Debian's Chromium is at /usr/bin/chromium for the browser tests
# (playwright-core drives it; no browser download is possible here). As root
# it installs the package when missing, as the Go tests install PostgreSQL.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
	exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "chromium.sh: installing Debian's chromium" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
	exit 0
fi
echo "chromium.sh: the browser tests need /usr/bin/chromium; install it (Debian: apt-get install chromium)" >&2
exit 1
