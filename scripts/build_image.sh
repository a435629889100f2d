#!/usr/bin/env bash
# Build Lepton's image without a Docker engine or a registry: buildah, from a Debian 12
# base made here with debootstrap (no image can be pulled on CI machines).
#
#   scripts/build_image.sh [TAG]        # default TAG: localhost/lepton:dev
#
# The base (localhost/pybase:bookworm: Debian 12's Python 3.11) is made once and kept in
# buildah's storage; later builds reuse it. Needs root, buildah and debootstrap
# (apt-get install -y buildah debootstrap). Prints the image's size in bytes at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-localhost/lepton:dev}"
BASE="localhost/pybase:bookworm"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA=/etc/ssl/certs/ca-certificates.crt

for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install -y buildah debootstrap" >&2; exit 1; }
done

if ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
  echo "[image] making $BASE with debootstrap (once)" >&2
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >/dev/null
  # What the official slim images also drop: apt lists and docs.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/var/cache/apt/*.bin
  ctr="$(buildah from scratch)"
  mnt="$(buildah mount "$ctr")"
  cp -a "$rootfs"/. "$mnt"/
  buildah umount "$ctr" >/dev/null
  buildah config --env LANG=C.UTF-8 --cmd python3 "$ctr"
  buildah commit --quiet "$ctr" "$BASE" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

echo "[image] building $TAG" >&2
# The CA bundle is mounted because TLS to the package registries may be intercepted.
buildah bud --quiet --isolation chroot --layers \
  --build-arg "BASE=$BASE" \
  -v "$CA:$CA:ro" --build-arg "PIP_CERT=$CA" \
  -t "$TAG" -f Dockerfile . >/dev/null
echo "[image] built $TAG" >&2
buildah images --noheading --format '{{.Size}}' "$TAG"
