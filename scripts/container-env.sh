# Sourced by scripts/images.sh and scripts/test.sh: the container engine
# that builds and runs picsift's images, exported as
# PICSIFT_CONTAINER_ENGINE (podman when installed, else docker; set it to
# choose). For podman, when a plain `podman run` of the base image fails
# and CONTAINERS_CONF is not set, it points CONTAINERS_CONF at
# docker/containers.conf (runc, cgroupfs, no default ulimits), which works
# as root on CI's machines.
PICSIFT_BASE_IMAGE=${PICSIFT_BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
if [[ -z ${PICSIFT_CONTAINER_ENGINE:-} ]]; then
    if command -v podman >/dev/null; then
        PICSIFT_CONTAINER_ENGINE=podman
    elif command -v docker >/dev/null; then
        PICSIFT_CONTAINER_ENGINE=docker
    else
        echo "no container engine: install podman (scripts/setup.sh --tests does) or docker" >&2
        return 1 2>/dev/null || exit 1
    fi
fi
export PICSIFT_CONTAINER_ENGINE PICSIFT_BASE_IMAGE

# Whether the base image is here; podman and docker ask differently.
picsift_have_image() {
    "$PICSIFT_CONTAINER_ENGINE" image inspect "$1" >/dev/null 2>&1
}

# Picks CONTAINERS_CONF for podman (see above); needs the base image.
picsift_podman_conf() {
    [[ $PICSIFT_CONTAINER_ENGINE == podman && -z ${CONTAINERS_CONF:-} ]] || return 0
    picsift_have_image "$PICSIFT_BASE_IMAGE" || return 0
    if ! podman run --rm --network=none "$PICSIFT_BASE_IMAGE" true >/dev/null 2>&1; then
        local repo
        repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
        export CONTAINERS_CONF="$repo/docker/containers.conf"
        echo "containers: podman's defaults fail here; using CONTAINERS_CONF=$CONTAINERS_CONF" >&2
    fi
}
picsift_podman_conf
