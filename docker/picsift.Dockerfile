# picsift standalone (`picsift serve`) and the command line: one process,
# its data in /data (SQLite catalog, blobs, admin key), listening on
# 0.0.0.0:8080. Try it:
#   podman run -p 8080:8080 -v data:/data picsift/picsift:VERSION serve
# The first start prints the admin API key (also in /data/admin.key).
#
# Built on the worker image (the full binary and libtorch: the ML checks
# run on a CUDA GPU when there is one, else the CPU), so the two share
# their layers on disk and in registries. scripts/images.sh builds
# picsift/worker first and passes it as WORKER_IMAGE; by hand:
#   docker build -f docker/picsift.Dockerfile --build-arg WORKER_IMAGE=picsift/worker:VERSION \
#       -t picsift/picsift:VERSION target/images
#
# Health: GET /livez and /readyz on port 8080 (HEALTHCHECK below). Runs as
# UID 65532; with a read-only root it needs /data and /tmp writable.
ARG WORKER_IMAGE=picsift/worker:latest
FROM ${WORKER_IMAGE}
USER root
# A named volume mounted here starts out owned by the image's user.
RUN mkdir /data && chown 65532:65532 /data
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/picsift/picsift
LABEL org.opencontainers.image.title="picsift" \
      org.opencontainers.image.description="picsift standalone server (picsift serve) and command line" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PICSIFT_DATA=/data \
    PICSIFT_LISTEN=0.0.0.0:8080
VOLUME /data
EXPOSE 8080
# No HTTP client in the image: bash's /dev/tcp asks /livez.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /livez HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/picsift"]
CMD ["serve"]
