#!/usr/bin/env bash
# The web frontend's end-to-end test: headless Chromium (Debian's
# `chromium`, installed here when missing) driven by playwright-core
# against target/debug/picsift, which the caller builds (scripts/test.sh
# does; PICSIFT_BIN names another), and tus-js-client in Node
# (tests/node). Screenshots: tests/web/screenshots/.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null; then
    echo "web tests: installing chromium (apt)" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get install -y -q chromium >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
fi
if [ ! -d node_modules/playwright-core ]; then
    npm ci --no-audit --no-fund --silent
fi
# tus-js-client in Node (tests/node/tus_upload.mjs), which e2e.mjs runs too.
if [ ! -d ../node/node_modules/tus-js-client ]; then
    (cd ../node && npm ci --no-audit --no-fund --silent)
fi
exec node e2e.mjs
