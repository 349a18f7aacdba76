#!/usr/bin/env bash
# Installs what building picsift needs on a fresh Debian machine, and
# nothing that is already there. Safe to run again.
#   scripts/setup.sh          what `cargo build` and scripts/demo.sh need
#   scripts/setup.sh --tests  that, plus what only the tests need: real
#                             Redis, PostgreSQL and Garage (S3) servers,
#                             podman for the container images, clippy
#                             (scripts/test.sh passes it)
set -euo pipefail

tests=0
case "${1:-}" in
    --tests) tests=1 ;;
    "") ;;
    *) echo "usage: $0 [--tests]" >&2; exit 2 ;;
esac

need=()
command -v cmake >/dev/null || need+=(cmake)        # builds the vendored libjpeg-turbo
command -v nasm >/dev/null || need+=(nasm)          # its SIMD decoder
command -v curl >/dev/null || need+=(curl)          # demo.sh waits on /healthz
# HEIC and AVIF: libheif (built from its vendored source, so a C++
# compiler) finds the HEVC and AV1 decoders with pkg-config.
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v g++ >/dev/null || need+=(g++)
pkg-config --exists libde265 2>/dev/null || need+=(libde265-dev)
pkg-config --exists dav1d 2>/dev/null || need+=(libdav1d-dev)
if ((tests)); then
    command -v djpeg >/dev/null || need+=(libjpeg-turbo-progs)  # the benchmark's baseline
    # Real servers for the cluster-backend tests (started by the tests themselves).
    command -v redis-server >/dev/null || need+=(redis-server)
    # docs/cluster.md's commands, which a test runs as written.
    command -v openssl >/dev/null || need+=(openssl)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
    # The container images and their test (scripts/images.sh): podman with
    # runc, and mmdebstrap to make the Debian base image where no registry
    # can be reached.
    command -v podman >/dev/null || need+=(podman)
    command -v runc >/dev/null || need+=(runc)
    command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
fi
if ((${#need[@]})); then
    echo "setup: installing ${need[*]}" >&2
    SUDO=""
    [[ $(id -u) == 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
((tests)) || exit 0
# PostgreSQL's Debian package starts a cluster of its own; the tests do not use it.
# Garage (S3) builds from crates.io once (about 11 minutes) and is reused.
if ! command -v garage >/dev/null && [[ ! -x "$HOME/.cargo/bin/garage" ]]; then
    echo "setup: building Garage (S3 server for tests; once, about 11 minutes)" >&2
    cargo install garage --version 2.5.0 --locked --quiet
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
