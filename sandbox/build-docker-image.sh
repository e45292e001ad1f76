#!/usr/bin/env bash
# build-docker-image.sh [ROOTFS_DIR] [IMAGE_NAME]
#
# Turns the rootfs built by build-rootfs.sh into a local Docker image for the
# Docker backend (docker run --runtime=runsc ...). There is no registry: the
# image is made with `tar -C ROOTFS -c . | docker import - NAME:TAG`.
#
#   ROOTFS_DIR  default ${BATOS_SANDBOX_ROOTFS:-$HOME/.cache/batos/sandbox/rootfs}
#   IMAGE_NAME  default batos-sandbox
#   TAG         the first 16 hex digits of the rootfs stamp (OUT/.batos-stamp)
#
# Idempotent: if NAME:TAG already exists nothing is imported. The image also
# gets the label org.batos.stamp=<full stamp>. Starts nothing: it needs a
# reachable Docker daemon (see start-dockerd.sh) and says so if there is none.
# Last stdout line: "image=NAME:TAG".
# Exit status: 0 ok, 1 failure, 2 missing prerequisite (no rootfs / no daemon).
set -euo pipefail

PROG="build-docker-image"
say() { printf '[%s] %s\n' "$PROG" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$PROG" "$1" >&2; exit "${2:-1}"; }

ROOTFS="${1:-${BATOS_SANDBOX_ROOTFS:-${HOME:?HOME not set}/.cache/batos/sandbox/rootfs}}"
NAME="${2:-batos-sandbox}"
STAMP_FILE="$ROOTFS/.batos-stamp"

[ -f "$STAMP_FILE" ] || die "no rootfs at $ROOTFS (missing .batos-stamp): run sandbox/build-rootfs.sh first" 2
STAMP="$(sed -n 's/^stamp=//p' "$STAMP_FILE" | head -n1)"
[ -n "$STAMP" ] || die "$STAMP_FILE has no stamp= line" 1
TAG="${STAMP:0:16}"
IMAGE="$NAME:$TAG"

command -v docker >/dev/null || die "docker CLI not found: apt-get install docker.io" 2
if ! docker info >/dev/null 2>&1; then
    die "no Docker daemon is reachable (docker info failed). Start one, e.g. sudo sandbox/start-dockerd.sh, or use the runsc backend, which needs no daemon" 2
fi

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "image $IMAGE already exists"
    echo "image=$IMAGE"
    exit 0
fi

say "importing $ROOTFS as $IMAGE"
# --numeric-owner: keep root:root (0:0) regardless of the host's user names.
# The stamp file itself is left out of the image.
tar --numeric-owner --exclude=./.batos-stamp -C "$ROOTFS" -cf - . \
    | docker import \
        --change 'USER 1000:1000' \
        --change 'WORKDIR /tmp' \
        --change 'ENV PATH=/usr/bin HOME=/tmp LANG=C.UTF-8 MALLOC_ARENA_MAX=2' \
        --change 'CMD ["/usr/bin/python3","-I","-S","/opt/batos/runner.py"]' \
        --change "LABEL org.batos.stamp=$STAMP" \
        --message "batos sandbox rootfs $STAMP" \
        - "$IMAGE" >/dev/null
docker image inspect "$IMAGE" >/dev/null || die "import reported success but $IMAGE is missing"
say "done: $IMAGE ($(docker image inspect --format '{{.Size}}' "$IMAGE") bytes)"
echo "image=$IMAGE"
