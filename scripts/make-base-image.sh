#!/usr/bin/env bash
# Builds the stand-in base image local/node:20-slim (Debian trixie + Node.js 20 from Debian)
# for hosts that cannot pull from a container registry. See docs/dockerfile.md.
#
# Idempotent and cached:
#   - the image already exists            -> exit at once;
#   - the root-filesystem tarball exists  -> `docker import` it (no download);
#   - otherwise debootstrap + apt in a chroot, save the tarball, import it.
# Usage: scripts/make-base-image.sh [--rebuild]   (run as root; needs debootstrap)
set -euo pipefail

IMAGE=${NOCTURNA_BASE_IMAGE:-local/node:20-slim}
SUITE=trixie
# The Debian mirror: DEBIAN_MIRROR, else the one this host's own apt sources use for the main
# archive (deb822 `URIs:` or one-line `deb URI`), so the script names no mirror of its own.
host_mirror() {
  # Missing files are normal (a host has one format or the other): never an error here.
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    2>/dev/null || true; } | sed -nE 's#^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)([a-z]+://[^[:space:]]*/debian)/?([[:space:]].*)?$#\3#;T;p;q'
}
CACHE_DIR=${NOCTURNA_CACHE_DIR:-/var/cache/nocturna-infra}
# Bump the suffix when the recipe below changes, so a stale cached tarball is not reused.
TARBALL="$CACHE_DIR/node-20-slim-$SUITE-v1.tar"
DOCKER=${DOCKER:-/usr/bin/docker}

if [[ ${1:-} == --rebuild ]]; then
  rm -f "$TARBALL"
  "$DOCKER" image rm "$IMAGE" >/dev/null 2>&1 || true
fi

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE: present"
  exit 0
fi

if [[ ! -s $TARBALL ]]; then
  mkdir -p "$CACHE_DIR"
  rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  chmod 755 "$rootfs" # apt's _apt user must reach the chroot's download dirs
  cleanup() {
    umount "$rootfs/proc" 2>/dev/null || true
    rm -rf --one-file-system "$rootfs"
  }
  trap cleanup EXIT

  MIRROR=${DEBIAN_MIRROR:-$(host_mirror)}
  [[ -n $MIRROR ]] || {
    echo "$IMAGE: no Debian mirror: set DEBIAN_MIRROR (none found in /etc/apt/sources.list*)" >&2
    exit 1
  }
  echo "$IMAGE: debootstrap $SUITE into $rootfs from $MIRROR"
  # Plain-HTTP mirror: apt verifies packages by signature, and HTTP avoids any
  # TLS-intercepting proxy on the way.
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 30 "$CACHE_DIR/debootstrap.log"; exit 1; }

  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  mount -t proc proc "$rootfs/proc"
  chroot "$rootfs" /bin/sh -eu -c '
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm ca-certificates >/dev/null
    groupadd --gid 1000 node
    useradd --uid 1000 --gid node --create-home --shell /bin/bash node
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/apt/* /var/log/dpkg.log /tmp/*
  '
  umount "$rootfs/proc"
  : >"$rootfs/etc/resolv.conf"

  tar -C "$rootfs" --numeric-owner --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
    -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
fi

node_version=$(tar -xOf "$TARBALL" ./usr/share/doc/nodejs/changelog.Debian.gz 2>/dev/null \
  | gzip -dc | sed -n '1s/.*(\([0-9.]*\).*/\1/p' || true)
echo "$IMAGE: importing $TARBALL (node ${node_version:-unknown})"
"$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=${node_version:-20}" \
  --change 'CMD ["node"]' \
  --message "nocturna-infra stand-in for node:20-slim (Debian $SUITE)" \
  "$TARBALL" "$IMAGE" >/dev/null
echo "$IMAGE: created"
