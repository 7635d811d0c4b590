#!/bin/bash
# Build the lvsd container image where no image registry is reachable, and prove it runs:
#   bash packaging/build-image.sh [TAG]          (root; podman, buildah and mmdebstrap from Debian)
# 1. a base image from Debian packages (mmdebstrap: bookworm, python3, python3-venv), imported
#    once as localhost/lvsd-base:bookworm;
# 2. the wheels built on the host, with the host's own package index settings, into the build
#    context, so the image build needs no network;
# 3. `podman build --isolation chroot` of the Dockerfile over that base;
# 4. `lvsd --version` and `lvsd check-config /etc/lvsd/lvsd.toml` run inside the image.
# Chroot isolation and `buildah run --isolation chroot`, because on this kind of machine the OCI
# runtime cannot start a container: crun fails with "setrlimit RLIMIT_NPROC: Operation not
# permitted" (and "cgroups in hybrid mode not supported" without --cgroups=disabled).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
TAG=${1:-localhost/lvsd:latest}
BASE=localhost/lvsd-base:bookworm
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lvsd-image.XXXXXX")
trap 'rm -rf "$WORK"; [[ -n ${CTR:-} ]] && buildah rm "$CTR" >/dev/null 2>&1 || true' EXIT

if ! podman image exists "$BASE"; then
    echo "build-image: making $BASE with mmdebstrap"
    mmdebstrap --quiet --variant=apt --include=python3,python3-venv,ca-certificates \
        bookworm "$WORK/base.tar"
    podman import --quiet "$WORK/base.tar" "$BASE" >/dev/null
    rm -f "$WORK/base.tar"
fi

echo "build-image: wheels"
git -C "$REPO" ls-files -z | (cd "$REPO" && xargs -0 cp --parents -t "$WORK") 2>/dev/null \
    || cp -a "$REPO/." "$WORK/"
build_requires=$(python3 -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"], sep="\n")' "$REPO/pyproject.toml")
mapfile -t build_requires <<< "$build_requires"
python3 -m pip wheel --quiet --wheel-dir "$WORK/wheels" "$WORK[fast]" "${build_requires[@]}"

echo "build-image: podman build $TAG"
podman build --quiet --format docker --isolation chroot --ulimit nofile=1024:1024 --build-arg "BASE_IMAGE=$BASE" \
    --build-arg "PIP_OPTIONS=--no-index --find-links /src/wheels" -t "$TAG" "$WORK" >/dev/null

echo "build-image: lvsd inside $TAG"
CTR=$(buildah from --quiet "$TAG")
buildah run --isolation chroot "$CTR" -- lvsd --version
buildah run --isolation chroot "$CTR" -- lvsd check-config /etc/lvsd/lvsd.toml
echo "build-image: $TAG built; lvsd --version and check-config ran inside it"
