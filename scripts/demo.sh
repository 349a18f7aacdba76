#!/usr/bin/env bash
# Builds picsift, starts the standalone server, uploads a generated demo
# zip with the CLI, follows it to the end and prints its report. The server
# then keeps running until Ctrl-C (DEMO_EXIT=1 stops it after the demo).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# libtorch (torch from PyPI, once) for the ML checks, and the demo models.
source scripts/torch-env.sh
./scripts/models.sh

LISTEN=${PICSIFT_LISTEN:-127.0.0.1:8080}
DATA=${PICSIFT_DATA:-.data/demo}
cargo build --workspace --bins --locked
BIN=target/debug

mkdir -p "$DATA"
"$BIN/picsift-fixtures" demo "$DATA/demo.zip"
# The demo policy: quality checks, the two demo classifiers and NudeNet.
"$BIN/picsift" serve --data "$DATA" --listen "$LISTEN" --policy policies/demo.toml &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 100); do
    curl -fs "http://$LISTEN/healthz" >/dev/null && break
    sleep 0.1
done

export PICSIFT_SERVER="http://$LISTEN"
PICSIFT_API_KEY=$(cat "$DATA/admin.key")
export PICSIFT_API_KEY
ID=$("$BIN/picsift" upload "$DATA/demo.zip")
echo "uploaded batch $ID"
"$BIN/picsift" status "$ID" --wait
"$BIN/picsift" report "$ID"
cat <<MSG

Open $PICSIFT_SERVER/ in a browser and sign in with the admin API key
(in $DATA/admin.key) to upload folders, follow batches and search images.
Or from a shell:
  KEY=\$(cat $DATA/admin.key)
  curl -s -H "Authorization: Bearer \$KEY" $PICSIFT_SERVER/v1/batches/$ID
  curl -s -H "Authorization: Bearer \$KEY" $PICSIFT_SERVER/v1/batches/$ID/report
  curl -s -H "Authorization: Bearer \$KEY" "$PICSIFT_SERVER/v1/images?batch=$ID"
  PICSIFT_API_KEY=\$KEY $BIN/picsift upload SOME_FOLDER_OR_ZIP --server $PICSIFT_SERVER
  $BIN/picsift admin keys create --data $DATA --tenant acme
MSG
if [[ ${DEMO_EXIT:-0} == 1 ]]; then
    exit 0
fi
echo "server running on $PICSIFT_SERVER (data in $DATA); Ctrl-C stops it"
wait $SERVER
