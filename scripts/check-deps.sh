#!/usr/bin/env bash
# Fails when a crate gains a dependency its role forbids (docs/architecture.md
# has the picture): the domain core links no driver, no HTTP server, no
# Kubernetes client and no libtorch; only the worker and the full `picsift`
# binary link libtorch. Reads Cargo.lock through `cargo tree`; builds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
# crate (and cargo tree options) | crates it must not reach, normal dependencies only
check() {
    local what=$1 forbidden=$2
    shift 2
    local tree
    tree=$(cargo tree --locked -e normal --prefix none --format '{p}' "$@" | awk '{print $1}' | sort -u)
    local found=()
    for dep in $forbidden; do
        if grep -qx "$dep" <<<"$tree"; then
            found+=("$dep")
        fi
    done
    if ((${#found[@]})); then
        echo "check-deps: $what depends on ${found[*]}, which its role forbids" >&2
        fail=1
    else
        echo "check-deps: $what ok"
    fi
}

DRIVERS="aws-config aws-sdk-s3 redis sqlx sqlx-core"
SERVERS="axum kube kube-client"
TORCH="tch torch-sys picsift-ml picsift-worker"

check picsift-core "$DRIVERS $SERVERS $TORCH reqwest picsift-backends" -p picsift-core
check picsift-crds "$DRIVERS axum $TORCH picsift-backends" -p picsift-crds
check picsift-backends "$SERVERS $TORCH" -p picsift-backends
check picsift-ml "$DRIVERS $SERVERS picsift-backends picsift-worker" -p picsift-ml
check picsift-worker "$DRIVERS $SERVERS picsift-backends" -p picsift-worker
check picsift-gateway "$DRIVERS $TORCH picsift-backends picsift-operator" -p picsift-gateway
check picsift-operator "$DRIVERS $TORCH picsift-backends picsift-gateway" -p picsift-operator
check "picsift --no-default-features (gateway and operator images)" "$TORCH" -p picsift --no-default-features
# One TLS crypto provider: aws-lc-rs (the AWS SDK's); kube is built on it too.
check "the workspace (one TLS provider)" "ring" --workspace
exit $fail
