#!/usr/bin/env bash
# Makes the Debian base image the Dockerfiles take as BASE_IMAGE on a machine without a registry:
# debootstrap (minbase, plus HAProxy and CA certificates) from the mirror apt already uses,
# a root filesystem tar cached under a key derived from everything that shapes it, and a
# `docker import` into the engine at DOCKER_HOST unless that engine already has the tag.
# Prints the image reference (clawker/debian-base:<key>) on stdout; progress goes to stderr.
#
# Environment:
#   CLAWKER_BASE_CACHE     where the rootfs tars live (default ${XDG_CACHE_HOME:-~/.cache}/clawker/base)
#   CLAWKER_DEBIAN_MIRROR  the mirror (default: the first non-security URI in /etc/apt/sources*)
#   CLAWKER_DEBIAN_SUITE   the suite (default bookworm)
#   DOCKER                 the docker CLI (default docker)
set -euo pipefail

suite="${CLAWKER_DEBIAN_SUITE:-bookworm}"
# iproute2 brings `ss`: the egress proxy destroys revoked sessions with it (SOCK_DESTROY).
packages="haproxy,ca-certificates,iproute2"
# Bump when the way the root filesystem is made changes: it is part of the cache key.
recipe=1
cache="${CLAWKER_BASE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clawker/base}"
docker="${DOCKER:-docker}"
arch="$(dpkg --print-architecture)"

log() { printf 'debian-base: %s\n' "$*" >&2; }

# The mirror apt is configured with: deb822 `URIs:` lines or one-line `deb URI suite ...` entries.
default_mirror() {
  local uri
  uri="$(
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?//p' |
      tr ' ' '\n' | grep -E '^https?://' | grep -v -- '-security' | head -n 1
  )"
  [ -n "$uri" ] || {
    log "no Debian mirror found in /etc/apt/sources*; set CLAWKER_DEBIAN_MIRROR"
    exit 1
  }
  printf '%s\n' "$uri"
}
mirror="${CLAWKER_DEBIAN_MIRROR:-$(default_mirror)}"

# The key covers every input that shapes the root filesystem.
key="$(printf '%s\n' "$recipe" "$suite" "$packages" "$mirror" "$arch" minbase | sha256sum | cut -c1-16)"
ref="clawker/debian-base:$key"
tar_file="$cache/debian-$suite-$key.tar"

mkdir -p "$cache"
# One builder per key at a time: concurrent test files wait for the first one's tar.
exec 9>"$tar_file.lock"
flock 9
if [ ! -s "$tar_file" ]; then
  command -v debootstrap >/dev/null || {
    log "debootstrap is not installed (apt-get install debootstrap)"
    exit 1
  }
  rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs" "$tar_file.partial"' EXIT
  log "debootstrap $suite from $mirror (about a minute)"
  started=$SECONDS
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 20 "$rootfs.log" >&2
    exit 1
  }
  rm -f "$rootfs.log"
  # Downloaded packages and indexes are not part of a base image.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar --numeric-owner -C "$rootfs" -cf "$tar_file.partial" .
  mv "$tar_file.partial" "$tar_file"
  rm -rf "$rootfs"
  trap - EXIT
  log "rootfs cached in $tar_file ($((SECONDS - started)) s)"
fi

if ! "$docker" image inspect "$ref" >/dev/null 2>&1; then
  log "importing $ref"
  "$docker" import --change 'CMD ["/bin/bash"]' "$tar_file" "$ref" >/dev/null
fi
flock -u 9
printf '%s\n' "$ref"
