# picsift operator (`picsift operator`): reconciles UploadBatches and
# WorkerPools, runs worker Jobs. No libtorch: the slim
# binary, on a distroless-style root (glibc, CA certificates, a non-root
# user; no shell, no package manager).
#
# Context: the folder scripts/images.sh stages (target/images), holding
# bin/picsift-slim, built on the host with
#   cargo build --release --locked -p picsift --no-default-features
# By hand: docker build -f docker/operator.Dockerfile -t picsift/operator:VERSION target/images
#
# Probes (no HEALTHCHECK: there is no shell or HTTP client in the image):
# GET /livez (liveness) and GET /readyz (readiness: 503 until the
# Kubernetes API and Redis answer) on port 9090, as the Helm chart sets them;
# /metrics on the same port.
# Writes nothing to disk: runs with a read-only root and no writable paths.
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BASE} AS rootfs
COPY bin/picsift-slim /rootfs/usr/local/bin/picsift
# The binary's shared libraries (as ldd resolves them), their copyright
# files, the CA bundle, and the non-root user 65532.
RUN set -eu; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates libde265-0 libdav1d6 >/dev/null; \
    bin=/rootfs/usr/local/bin/picsift; \
    if ldd "$bin" | grep -E 'not found|torch'; then echo "unexpected libraries" >&2; exit 1; fi; \
    libs=$(ldd "$bin" | awk '$2 == "=>" { print $3 } $1 ~ /^\// { print $1 }'); \
    for f in $libs; do mkdir -p "/rootfs$(dirname "$f")"; cp -L "$f" "/rootfs$f"; done; \
    for p in $(dpkg -S $libs 2>/dev/null | cut -d: -f1 | sort -u) ca-certificates; do \
        mkdir -p "/rootfs/usr/share/doc/$p"; cp "/usr/share/doc/$p/copyright" "/rootfs/usr/share/doc/$p/"; \
    done; \
    mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp; chmod 1777 /rootfs/tmp; \
    cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/; \
    echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin' >/rootfs/etc/passwd; \
    echo 'nonroot:x:65532:' >/rootfs/etc/group; \
    echo 'hosts: files dns' >/rootfs/etc/nsswitch.conf

FROM scratch
COPY --from=rootfs /rootfs/ /
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/picsift/picsift
LABEL org.opencontainers.image.title="picsift-operator" \
      org.opencontainers.image.description="picsift operator: reconciles UploadBatches and WorkerPools, and the worker autoscaler" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
EXPOSE 9090
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/picsift"]
CMD ["operator"]
