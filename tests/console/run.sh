#!/usr/bin/env bash
# The console's browser tests: builds the relay, installs playwright-core (pinned, no browser
# download) when missing, and runs the tests with Debian's Chromium against a database of their
# own on DATABASE_URL's server. Screenshots land in target/console-screenshots/.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "console tests: ${CHROMIUM:-/usr/bin/chromium} is missing; install Debian's chromium (apt-get install chromium)" >&2
    exit 1
fi
(cd "$root" && cargo build -q -p outbox-relay)
if [ ! -d node_modules/playwright-core ]; then
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent
fi
RELAY_BIN="$root/target/debug/outbox-relay" SCREENSHOTS="$root/target/console-screenshots" \
    node --test --test-concurrency=1 console.test.mjs
