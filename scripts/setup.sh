#!/usr/bin/env bash
# Installs what building and testing picsift needs on a fresh Debian
# machine, and nothing that is already there. Safe to run again.
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)        # builds the vendored libjpeg-turbo
command -v nasm >/dev/null || need+=(nasm)          # its SIMD decoder
command -v djpeg >/dev/null || need+=(libjpeg-turbo-progs)  # the benchmark's baseline
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    echo "setup: installing ${need[*]}" >&2
    SUDO=""
    [[ $(id -u) == 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
