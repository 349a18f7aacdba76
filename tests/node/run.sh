#!/usr/bin/env bash
# tus_upload.mjs (a resumable upload with tus-js-client, see its header),
# its dependencies installed from package-lock.json the first time. Paths
# in the arguments are taken from the caller's directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -d "$here/node_modules/tus-js-client" ]; then
    # To stderr: stdout carries the one JSON line of the result.
    (cd "$here" && npm ci --no-audit --no-fund --silent) >&2
fi
exec node "$here/tus_upload.mjs" "$@"
