#!/usr/bin/env bash
# Builds picsift's container images from docker/*.Dockerfile and tags them
# picsift/<role>:<workspace version>:
#   gateway, operator  the slim binary (no libtorch) on a distroless-style root
#   worker             the full binary and the libtorch libraries it loads
#   picsift            standalone `picsift serve` and the CLI, on the worker image
# Safe to run again: unchanged inputs reuse the engine's layer cache.
#
# The binaries are compiled here, on the host (no Rust toolchain in an image
# build), and staged with libtorch into the build context target/images/:
#   bin/picsift-slim  cargo build --locked -p picsift --no-default-features
#   bin/picsift       cargo build --locked -p picsift   (serve and worker, links libtorch)
#   libtorch/         from the torch==2.13.0 wheel (scripts/torch-env.sh)
# The base image (docker.io/library/debian:bookworm-slim) is pulled, or,
# where no registry can be reached, made from Debian packages with
# mmdebstrap and imported under that name.
#
# Options: --profile release (default) or dev: which cargo profile builds
# the binaries (dev reuses what scripts/test.sh's `cargo build --workspace
# --all-targets` made, and is what it tests).
# Environment: PICSIFT_CONTAINER_ENGINE (podman or docker), CARGO_TARGET_DIR,
# PICSIFT_IMAGE_SOURCE (the org.opencontainers.image.source label).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

profile=release
while (($#)); do
    case $1 in
        --profile) profile=${2:?--profile release|dev}; shift 2 ;;
        --profile=*) profile=${1#--profile=}; shift ;;
        *) echo "usage: $0 [--profile release|dev]" >&2; exit 2 ;;
    esac
done
# The full binary's build: in the dev profile the very build scripts/test.sh
# makes first (every target, so the same features), which it reuses.
case $profile in
    release) cargo_profile=(--release); out=release; full=(-p picsift) ;;
    dev) cargo_profile=(); out=debug; full=(--workspace --all-targets) ;;
    *) echo "images: unknown profile $profile (release or dev)" >&2; exit 2 ;;
esac

source scripts/container-env.sh
engine=$PICSIFT_CONTAINER_ENGINE
version=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' Cargo.toml)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source_url=${PICSIFT_IMAGE_SOURCE:-https://github.com/picsift/picsift}
target=${CARGO_TARGET_DIR:-target}
ctx=target/images
mkdir -p "$ctx/bin" "$ctx/libtorch"

# Copies $1 to $2 without debug info, touching $2 only when it changes.
stage_binary() {
    strip --strip-debug -o "$2.tmp" "$1"
    if cmp -s "$2.tmp" "$2"; then rm "$2.tmp"; else mv "$2.tmp" "$2"; fi
}

# 1. The binaries. libtorch (torch-env) for the full one.
source scripts/torch-env.sh
echo "images: building the slim binary ($profile, no libtorch)" >&2
cargo build "${cargo_profile[@]}" --locked -p picsift --no-default-features
stage_binary "$target/$out/picsift" "$ctx/bin/picsift-slim"
if ldd "$ctx/bin/picsift-slim" | grep -E 'torch|not found'; then
    echo "images: the slim binary must not link libtorch" >&2
    exit 1
fi
echo "images: building the full binary ($profile, serve and worker, libtorch)" >&2
cargo build "${cargo_profile[@]}" --locked "${full[@]}"
stage_binary "$target/$out/picsift" "$ctx/bin/picsift"

# 2. libtorch: what the worker loads, from the torch wheel and its nvidia-*
# wheels. The dynamic loader's closure of the binary's DT_NEEDED and of
# libtorch's CUDA half (libtorch.so, libtorch_cuda.so: the CUDA runtime,
# cuBLAS, cuFFT, cuSPARSE(Lt), cuRAND, NCCL, NVSHMEM, cuFile, CUPTI, NVRTC,
# cuDNN's loader), which tch sees only when the binary loads it, plus what
# is dlopen()ed when a model runs on a GPU: cuDNN's sub-libraries (each loaded on first use: convolutions,
# engines, heuristics, RNN/attention), the NVRTC builtins and torch's NVRTC
# stub (TorchScript's fuser), torch's lazy CUDA linear algebra (cuSOLVER).
# Left out: Python bindings (libtorch_python, libtorch_global_deps, libshm),
# NVSHMEM's multi-node transports and bootstraps, cuFile's RDMA plugin,
# profiling (nvperf, pcsampling, checkpoint), cuBLAS/cuFFT drop-in wrappers
# (nvblas, cufftw), multi-GPU cuSOLVER (cusolverMg), NVRTC's .alt builds,
# headers and static libraries. libcuda.so.1 is the driver's, mounted at
# run time by the NVIDIA container runtime. Libraries that carry a symbol
# table (libtorch_cpu, libtorch_cuda, NCCL) are staged without it
# (strip --strip-unneeded: the dynamic symbols stay), about 210 MB less.
site=$(cd "$PICSIFT_TORCH_LIB/../.." && pwd)
search=("$PICSIFT_TORCH_LIB" "$site"/nvidia/*/lib)
find_lib() {
    local d
    for d in "${search[@]}"; do
        if [[ -f $d/$1 ]]; then echo "$d/$1"; return 0; fi
    done
    return 1
}
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
declare -A keep=()
todo=($(needed "$ctx/bin/picsift") libtorch.so libtorch_cuda.so)
for d in "${search[@]}"; do
    for f in "$d"/libcudnn_*.so.[0-9] "$d"/libnvrtc-builtins.so.* "$d"/libcaffe2_nvrtc.so "$d"/libtorch_cuda_linalg.so; do
        [[ -f $f && $f != *.alt.* ]] && todo+=("$(basename "$f")")
    done
done
while ((${#todo[@]})); do
    name=${todo[-1]}
    unset 'todo[-1]'
    [[ -n ${keep[$name]:-} ]] && continue
    path=$(find_lib "$name") || continue # a system library (glibc, libstdc++, zlib) or the driver's
    keep[$name]=$path
    todo+=($(needed "$path"))
done
# What was staged, and how: a change of either stages again.
stamp=$(echo "strip --strip-unneeded where .symtab"; for name in "${!keep[@]}"; do stat -c '%n %s %Y' "${keep[$name]}"; done | sort)
if [[ $stamp != "$(cat "$ctx/libtorch.stamp" 2>/dev/null)" ]]; then
    rm -rf "$ctx/libtorch" "$ctx/libtorch.stamp"
    mkdir -p "$ctx/libtorch"
    for name in "${!keep[@]}"; do
        src=${keep[$name]} dst=$ctx/libtorch/$name
        if readelf -S "$src" | grep '\.symtab' >/dev/null; then  # not -q: under pipefail, readelf's SIGPIPE would fail the test
            strip --strip-unneeded -o "$dst" "$src"
        else
            ln -f "$src" "$dst" 2>/dev/null || cp "$src" "$dst"
        fi
    done
    echo "$stamp" >"$ctx/libtorch.stamp"
fi
kept=$(du -cbl "$ctx"/libtorch/* | tail -1 | cut -f1)
all=$(du -cbl "$PICSIFT_TORCH_LIB"/*.so* "$site"/nvidia/*/lib/*.so* | tail -1 | cut -f1)
echo "images: libtorch for the worker: ${#keep[@]} libraries, $((kept >> 20)) MiB of the wheels' $((all >> 20)) MiB" >&2
# The CUDA half is not a DT_NEEDED of the binary (the linker drops it as
# unneeded): picsift-ml dlopen()s libtorch_cuda.so at start unless the device
# is cpu, so it must be staged.
[[ -n ${keep[libtorch_cuda.so]:-} ]] || { echo "images: libtorch_cuda.so not found in the torch wheel" >&2; exit 1; }

# 3. The base image.
if ! picsift_have_image "$PICSIFT_BASE_IMAGE"; then
    if ! "$engine" pull -q "$PICSIFT_BASE_IMAGE" >/dev/null 2>&1; then
        command -v mmdebstrap >/dev/null || {
            echo "images: cannot pull $PICSIFT_BASE_IMAGE; install mmdebstrap to make it from Debian packages" >&2
            exit 1
        }
        echo "images: no registry; making $PICSIFT_BASE_IMAGE from Debian bookworm packages (mmdebstrap)" >&2
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        # As debian:bookworm-slim is made: minbase, no documentation but the
        # copyright files, no locales, no apt lists.
        mmdebstrap --variant=minbase --quiet \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-include=/usr/share/locale/locale.alias' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log' \
            bookworm "$tmp/base.tar"
        "$engine" import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' \
            "$tmp/base.tar" "$PICSIFT_BASE_IMAGE" >/dev/null
        rm -rf "$tmp"
        trap - EXIT
    fi
fi
picsift_podman_conf

# 4. The images.
build_args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url"
    --build-arg "BASE=$PICSIFT_BASE_IMAGE")
if [[ $engine == podman ]]; then
    # Docker's image format keeps HEALTHCHECK; host networking lets the
    # builds' apt-get reach Debian where podman's own network cannot.
    build_args+=(--format docker --network=host)
fi
for role in gateway operator worker picsift; do
    echo "images: building picsift/$role:$version" >&2
    "$engine" build -q "${build_args[@]}" --build-arg "WORKER_IMAGE=picsift/worker:$version" \
        -f "docker/$role.Dockerfile" -t "picsift/$role:$version" "$ctx" >/dev/null
done

echo "images: slim binary's libraries (gateway, operator):" >&2
ldd "$ctx/bin/picsift-slim" >&2
for role in gateway operator worker picsift; do
    size=$("$engine" image inspect --format '{{.Size}}' "picsift/$role:$version")
    printf 'picsift/%s:%s\t%d MB\n' "$role" "$version" $((size / 1000000))
done
echo "images: done in $((SECONDS - start)) s" >&2
