#!/usr/bin/env bash
# End to end in the standalone server: a fresh `picsift serve` ingests one
# zip of photos (sent with curl); prints the time to 202, to the batch's completion, and the
# machine's CPU time per image over it. Issue 20's item 3 (docs/benchmarks.md).
#
# Usage: scripts/bench-serve-e2e.sh [BIN] [PHOTOS_DIR] [--perf]
#   BIN         the picsift binary (default target/release/picsift:
#               `cargo build --release -p picsift`)
#   PHOTOS_DIR  JPEGs to zip (default target/bench-data, written by
#               `PICSIFT_BENCH_IMAGES=40 PICSIFT_BENCH_ZIP_MB=0 cargo bench
#               -p picsift-tests --bench pipeline`)
#   --perf      record the whole machine with `perf record -g` meanwhile
#               (into $WORK/perf.data)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/picsift}")
PHOTOS=${2:-target/bench-data}
PERF=${3:-}
# shellcheck source=/dev/null
source scripts/torch-env.sh
WORK=$(mktemp -d /tmp/picsift-e2e.XXXXXX)
python3 - "$PHOTOS" "$WORK/photos.zip" <<'PY'
import glob, sys, zipfile
files = sorted(glob.glob(sys.argv[1] + "/*.jpg"))
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_STORED) as z:
    for f in files:
        z.write(f, f.split("/")[-1])
print(f"{len(files)} photos zipped", file=sys.stderr)
PY
N=$(python3 -c "import zipfile,sys; print(len(zipfile.ZipFile(sys.argv[1]).namelist()))" "$WORK/photos.zip")
PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
PICSIFT_DATA="$WORK/data" "$BIN" serve --listen "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do grep -q listening "$WORK/serve.log" && break; sleep 0.5; done
KEY=$(cat "$WORK/data/admin.key")
if [ "$PERF" = --perf ]; then
    perf record -F 999 -g -a -o "$WORK/perf.data" >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
    sleep 1
fi
cpu() { head -1 /proc/stat | awk '{print $2+$3+$4}'; }
C0=$(cpu); T0=$(date +%s.%N)
# curl, not `picsift upload`: the full binary's start (libtorch) is the
# client's cost, not the server's.
ID=$(curl -sf -X POST --data-binary @"$WORK/photos.zip" -H 'Content-Type: application/zip' \
    -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/batches" |
    python3 -c "import json,sys; print(json.load(sys.stdin)['id'])")
TU=$(date +%s.%N)
STATUS="http://127.0.0.1:$PORT/v1/batches/$ID"
while curl -s -H "Authorization: Bearer $KEY" "$STATUS" | grep -q '"completed_at":null'; do sleep 0.05; done
T1=$(date +%s.%N); C1=$(cpu)
if [ "$PERF" = --perf ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; echo "perf data: $WORK/perf.data"; fi
curl -s -H "Authorization: Bearer $KEY" "$STATUS" | python3 -c "import json,sys; print(json.load(sys.stdin)['counts'])"
python3 - "$N" "$T0" "$TU" "$T1" "$C0" "$C1" <<'PY'
import sys
n, t0, tu, t1, c0, c1 = (float(x) for x in sys.argv[1:])
e, cpu = t1 - t0, (c1 - c0) / 100
print(f"{int(n)} photos: 202 after {tu - t0:.2f} s, complete after {e:.2f} s: "
      f"{n / e:.2f} images/s; machine CPU {cpu:.1f} s ({cpu / e:.2f} cores), {1000 * cpu / n:.0f} ms per image")
PY
[ "$PERF" = --perf ] || rm -rf "$WORK"
