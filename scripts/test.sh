#!/usr/bin/env bash
# Every check CI runs: formatting, lints, then all tests (unit, pipeline,
# end to end against a real `picsift serve`). `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --tests
# libtorch for tch (torch 2.13.0 from PyPI, installed once and reused), and
# the models the ML tests load (trained or converted once, then cached).
source scripts/torch-env.sh
./scripts/models.sh
# The NudeNet model picsift loads (converted to TorchScript) scores as the
# original ONNX model does under onnxruntime, on the same inputs.
python -c "import onnxruntime" 2>/dev/null \
    || pip install -q --no-cache-dir --disable-pip-version-check onnxruntime==1.32.0
python scripts/ml/check_nudenet.py models/nudenet.pt

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# A run from a clean clone gains nothing from incremental state (GBs of
# disk CI does not have). (CARGO_INCREMENTAL=1 would not bring it back for
# our crates alone: it turns it on for every dependency too.)
export CARGO_INCREMENTAL=0
# No test ever asks a cloud metadata endpoint (169.254.169.254) for S3
# credentials: every test client has static keys, and this turns the
# lookup off for anything that would fall through to it.
export AWS_EC2_METADATA_DISABLED=true
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests run the real binaries. Building every target at once
# gives the binaries the same feature set as the tests (dev-dependencies
# included), so `cargo test` reuses them instead of building twice.
cargo build --workspace --all-targets --locked
cargo test --workspace --locked
# The dependency rules of docs/architecture.md (cargo tree; builds nothing).
./scripts/check-deps.sh
# No import cycles between the modules of a crate.
./scripts/module-cycles.py
# The container images (gateway, operator, worker, picsift; the dev
# profile reuses the binaries built above, plus the slim one without
# libtorch), then the cluster run from them: Redis, PostgreSQL and Garage
# on the host, the gateway and a worker as read-only, non-root containers,
# a worker killed mid-batch, the operator without an API server, the
# standalone image.
./scripts/images.sh --profile dev
source scripts/container-env.sh
cargo test --workspace --locked --test containers -- --ignored
# The Helm chart: lint, render, validate (Python, in .venv-chart).
./scripts/chart-test.sh -q
# The web frontend in headless Chromium against the binary built above.
./tests/web/run.sh
