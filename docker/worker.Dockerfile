# picsift worker (`picsift worker`): takes chunk tasks from the queue and
# runs the pipeline, with the quality and ML checks on libtorch: on a CUDA
# GPU when the container has one (the NVIDIA container runtime or device
# plugin mounts the driver), else on the CPU.
#
# Context: the folder scripts/images.sh stages (target/images), holding
# bin/picsift, built on the host with
#   cargo build --release --locked -p picsift
# and libtorch/: the shared libraries of the PyPI torch==2.13.0 wheel and
# its nvidia-* wheels that the worker loads (scripts/images.sh lists how
# they are chosen). By hand, after scripts/images.sh has staged them:
#   docker build -f docker/worker.Dockerfile -t picsift/worker:VERSION target/images
#
# Runs as UID 65532 with a read-only root; the one writable path it needs
# is /tmp (an emptyDir in worker Jobs), where CUDA keeps its kernel cache.
# No port and no probe: a worker Job's health is its exit status, and a
# dead worker's tasks come back through the queue.
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}
RUN set -eu; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates libde265-0 libdav1d6 >/dev/null; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log; \
    groupadd --gid 65532 nonroot; \
    useradd --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin nonroot
# libtorch through the normal library path: ld.so.conf.d and its cache.
COPY libtorch/ /opt/libtorch/lib/
RUN echo /opt/libtorch/lib >/etc/ld.so.conf.d/libtorch.conf && ldconfig
COPY bin/picsift /usr/local/bin/picsift
RUN if ldd /usr/local/bin/picsift | grep 'not found'; then exit 1; fi
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/picsift/picsift
LABEL org.opencontainers.image.title="picsift-worker" \
      org.opencontainers.image.description="picsift worker: the image pipeline and its ML checks (libtorch, CUDA or CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    CUDA_CACHE_PATH=/tmp/cuda-cache
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/picsift"]
CMD ["worker"]
